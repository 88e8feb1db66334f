"""Fetch a source, normalize it, publish it through the write side with its provenance.

The same path serves a one-off `fleetbus publish --chart|--repo|--git` and every check of a
standing source, so overrides, waves, `dependsOn` and blueprints apply to what a source
publishes exactly as to an upload. Fetching and normalizing run in a worker thread within the
time limit, in a temporary directory removed afterwards; when the limit passes or the caller is
cancelled, the fetch's child processes are killed (`FetchDeadline.cancel`), so no download goes
on behind a fetch given up; a Kustomize overlay is checked first
to refer only to paths inside its repository (`normalizer.kustomize_references`).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from events.catalog import Event, Placement, Provenance, RolloutStrategy
from events.store import EventStore
from normalizer import NormalizedSource, NormalizeOptions, detect_format, normalize
from normalizer.errors import NormalizerError
from normalizer.kustomize_references import check_overlay
from registry.overrides import load_latest_snapshot
from registry.tasksets import ChartArchives, PublishOutcome, publish_taskset
from sources.credentials import Credential
from sources.errors import SourceDoesNotRender, SourceTimedOut
from sources.fetch import FetchPolicy, fetch_source
from sources.processes import FetchDeadline
from sources.references import SourceRef, chart_name_of
from taskset.model import Taskset


@dataclass(frozen=True)
class PublishSettings:
    """What a fetched source is published as."""

    name: str
    namespace: str = "default"
    values: dict[str, Any] = field(default_factory=dict)
    placement: Placement = field(default_factory=Placement)
    rollout: RolloutStrategy = field(default_factory=RolloutStrategy)


@dataclass(frozen=True)
class SourcePublished:
    outcome: PublishOutcome | None
    """None when the source still holds what was published last (nothing fetched)."""
    provenance: Provenance | None
    notes: tuple[str, ...] = ()


def default_name(ref: SourceRef) -> str:
    return chart_name_of(ref) if ref.kind != "git" else ""


def _fetch_and_normalize(
    ref: SourceRef,
    settings: PublishSettings,
    policy: FetchPolicy,
    credential: Credential | None,
    known: Provenance | None,
    previous: Taskset | None,
    source_name: str,
    deadline: FetchDeadline,
) -> tuple[NormalizedSource, Provenance] | None:
    with tempfile.TemporaryDirectory(prefix="fleetbus-source-") as tmp:
        fetched = fetch_source(
            ref,
            Path(tmp),
            policy,
            credential=credential,
            known=known,
            source_name=source_name,
            deadline=deadline,
        )
        if fetched is None:
            return None
        what = fetched.provenance.chart or fetched.provenance.url
        try:
            if detect_format(fetched.path) == "kustomize":
                check_overlay(
                    fetched.path,
                    inside=fetched.root,
                    inside_name="repository" if fetched.provenance.kind == "git" else "chart",
                )
            normalized = normalize(
                fetched.path,
                NormalizeOptions(
                    name=settings.name,
                    namespace=settings.namespace,
                    values=[settings.values] if settings.values else [],
                    previous=previous,
                ),
            )
        except NormalizerError as e:
            message = str(e).replace(f"{tmp}/", "").replace(tmp, "")
            candidate = fetched.provenance.chart_version or fetched.provenance.commit[:12]
            raise SourceDoesNotRender(f"{what} {candidate} does not render: {message}") from e
        return normalized, fetched.provenance


async def fetch_and_publish(
    store: EventStore,
    charts: ChartArchives,
    ref: SourceRef,
    settings: PublishSettings,
    policy: FetchPolicy,
    *,
    actor: str,
    now: datetime,
    credential: Credential | None = None,
    known: Provenance | None = None,
    source_name: str = "",
    preceding: Sequence[Event] = (),
    admit: Callable[[Sequence[Event]], Awaitable[None]] | None = None,
) -> SourcePublished:
    """Fetch `ref` and publish it as the next version of `settings.name` (unless unchanged);
    `admit` may refuse the decided events before anything is written (a project's quotas)."""
    latest = await load_latest_snapshot(store, settings.name)
    previous = latest.snapshot.taskset if latest is not None and not latest.retired else None
    deadline = FetchDeadline(policy.limits.timeout_s)
    work = asyncio.to_thread(
        _fetch_and_normalize,
        ref,
        settings,
        policy,
        credential,
        known,
        previous,
        source_name,
        deadline,
    )
    try:
        result = await asyncio.wait_for(work, timeout=policy.limits.timeout_s)
    except TimeoutError as e:
        deadline.cancel()
        raise SourceTimedOut(
            f"fetching {ref.describe()} took longer than {policy.limits.timeout_s:g}s"
        ) from e
    except asyncio.CancelledError:
        deadline.cancel()
        raise
    if result is None:
        return SourcePublished(outcome=None, provenance=known)
    normalized, provenance = result
    outcome = await publish_taskset(
        store,
        charts,
        normalized,
        actor=actor,
        now=now,
        placement=settings.placement,
        rollout=settings.rollout,
        provenance=provenance,
        preceding=preceding,
        admit=admit,
    )
    return SourcePublished(
        outcome=outcome,
        provenance=provenance,
        notes=(*normalized.left_out, *normalized.notes),
    )
