"""The hub service that keeps standing sources in step: `SourceWatcher`.

It follows the sources' events on the log (`fleet.evt.source.>`) for their definitions, checks
each one when it is due (every `interval_s`, sooner after `source add`, at once on `source
sync`) and publishes what is new through `sources.publish`. A check that fails records a
`SourceFailed` (once per distinct reason), leaves the version published last in place and is
tried again after a backoff that doubles up to the source's interval. Checks run one at a time:
fetching and rendering charts is CPU work the hub shares with everything else.

`add_source` and `remove_source` are the commands behind `fleetbus source add|rm`; they read
the sources' state from the log, decide (`sources.watch`) and append.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from events.catalog import Event, Provenance, SourceAdded
from events.errors import EventLogError
from events.store import EventStore
from events.subjects import event_subject
from registry.overrides import load_latest_snapshot
from registry.tasksets import ChartArchives
from sources.credentials import Credential, CredentialStore
from sources.errors import SourceError, SourceNotFound
from sources.fetch import FetchPolicy
from sources.publish import PublishSettings, SourcePublished, fetch_and_publish
from sources.watch import (
    SourceRecord,
    SourcesState,
    after_success,
    decide_add,
    decide_failure,
    decide_remove,
    due,
    evolve,
)
from taskset.errors import FleetbusError

log = logging.getLogger(__name__)

SOURCE_AGGREGATE = "source"
SOURCE_SUBJECTS = event_subject(SOURCE_AGGREGATE, ">")


async def load_sources(store: EventStore) -> tuple[SourcesState, int]:
    """The sources' state folded from the log, and the last sequence read."""
    state = SourcesState()
    last = 0
    async for stored in store.read(subject=SOURCE_SUBJECTS, skip_undecodable=True):
        evolve(state, stored.event)
        last = stored.seq
    return state, last


async def add_source(store: EventStore, definition: SourceAdded) -> bool:
    """Append the definition (replacing one of the same name); False when nothing changed."""
    state, _ = await load_sources(store)
    owner = next(
        (r.name for r in state.sources.values() if r.definition.taskset == definition.taskset),
        None,
    )
    subject = event_subject(SOURCE_AGGREGATE, definition.source)
    expected = await store.subject_version(subject)
    events = decide_add(
        definition, existing=state.sources.get(definition.source), taskset_owner=owner
    )
    if events:
        await store.append(events, expected=expected)
    return bool(events)


async def remove_source(store: EventStore, name: str, *, actor: str, now: datetime) -> None:
    state, _ = await load_sources(store)
    subject = event_subject(SOURCE_AGGREGATE, name)
    expected = await store.subject_version(subject)
    events = decide_remove(name, existing=state.sources.get(name), actor=actor, now=now)
    await store.append(events, expected=expected)


@dataclass(frozen=True)
class CheckResult:
    source: str
    taskset: str
    outcome: str
    """`published`, `unchanged` or `failed`."""
    version: int = 0
    provenance: Provenance | None = None
    reason: str = ""


class SourceWatcher:
    def __init__(
        self,
        store: EventStore,
        charts: ChartArchives,
        credentials: CredentialStore,
        policy: FetchPolicy,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        tick_s: float = 1.0,
        admit: Callable[[Sequence[Event]], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.admit = admit
        """Sees each publish's events before they are written and may refuse them (a
        project's quotas); a refusal is a failure of the source like any other."""
        self.charts = charts
        self.credentials = credentials
        self.policy = policy
        self.clock = clock
        self.tick_s = tick_s
        self.state = SourcesState()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the sources' definitions and check them when due, until `stop` is set."""
        self.state, last = await load_sources(self.store)
        self.ready.set()
        following = asyncio.create_task(self._follow(last + 1), name="sources-follow")
        try:
            while not stop.is_set():
                for name in [n for n, r in self.state.sources.items() if due(r, self.clock())]:
                    if stop.is_set():
                        break
                    await self.check(name)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(stop, self._wake), timeout=self.tick_s)
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, EventLogError):
                await following

    async def _follow(self, from_seq: int) -> None:
        async for stored in self.store.follow(
            from_seq=from_seq, subject=SOURCE_SUBJECTS, skip_undecodable=True
        ):
            before = self.state.sources.get(getattr(stored.event, "source", ""))
            evolve(self.state, stored.event)
            after = self.state.sources.get(getattr(stored.event, "source", ""))
            if after is not None and before is not None and after.definition is before.definition:
                # A SourceFailed this watcher recorded: keep its own bookkeeping.
                self.state.sources[after.name] = replace(
                    before, last_reason=after.last_reason, last_failed_at=after.last_failed_at
                )
            self._wake.set()

    def wake(self) -> None:
        """Look at the sources again now (one was added or changed)."""
        self._wake.set()

    async def sync(self, name: str) -> CheckResult:
        """Check `name` now (`fleetbus source sync`)."""
        if name not in self.state.sources:
            # A source added a moment ago may not have reached the follower yet.
            state, _ = await load_sources(self.store)
            if name not in state.sources:
                raise SourceNotFound(f"no standing source named {name}")
            self.state.sources.setdefault(name, state.sources[name])
        return await self.check(name)

    async def check(self, name: str) -> CheckResult:
        async with self._lock:
            record = self.state.sources.get(name)
            if record is None:
                raise SourceNotFound(f"no standing source named {name}")
            result, updated = await self._check(record)
            current = self.state.sources.get(name)
            if current is not None and current.definition.id == record.definition.id:
                self.state.sources[name] = updated
            return result

    async def _check(self, record: SourceRecord) -> tuple[CheckResult, SourceRecord]:
        definition = record.definition
        now = self.clock()
        candidate = ""
        try:
            credential: Credential | None = (
                self.credentials.get(definition.credentials) if definition.credentials else None
            )
            known = record.last_provenance if record.settled else None
            if record.settled and known is None:
                latest = await load_latest_snapshot(self.store, definition.taskset)
                known = latest.provenance if latest and not latest.retired else None
            published: SourcePublished = await fetch_and_publish(
                self.store,
                self.charts,
                record.reference,
                PublishSettings(
                    name=definition.taskset,
                    namespace=definition.namespace,
                    values=definition.values,
                    placement=definition.placement,
                    rollout=definition.rollout,
                ),
                self.policy,
                actor=f"source:{definition.source}",
                now=now,
                credential=credential,
                known=known if known is not None and known.source == definition.source else None,
                source_name=definition.source,
                admit=self.admit,
            )
        except FleetbusError as e:
            if isinstance(e, EventLogError):
                raise
            stage = e.stage if isinstance(e, SourceError) else "publish"
            reason = str(e)
            updated, events = decide_failure(
                record, reason=reason, stage=stage, candidate=candidate, now=now
            )
            if events:
                subject = event_subject(SOURCE_AGGREGATE, definition.source)
                await self.store.append(events, expected=await self.store.subject_version(subject))
            log.warning(
                "source %s failed (%s); retrying in %.0fs",
                definition.source,
                reason,
                (updated.next_check_at - now).total_seconds() if updated.next_check_at else 0,
            )
            return (
                CheckResult(
                    source=definition.source,
                    taskset=definition.taskset,
                    outcome="failed",
                    reason=reason,
                    version=record.last_version,
                    provenance=record.last_provenance,
                ),
                updated,
            )
        outcome = published.outcome
        changed = outcome is not None and outcome.changed
        version = outcome.version if outcome is not None else record.last_version
        updated = after_success(record, now=now, provenance=published.provenance, version=version)
        if changed:
            log.info("source %s published %s v%s", definition.source, definition.taskset, version)
        return (
            CheckResult(
                source=definition.source,
                taskset=definition.taskset,
                outcome="published" if changed else "unchanged",
                version=version,
                provenance=updated.last_provenance,
            ),
            updated,
        )

    def records(self) -> list[SourceRecord]:
        return [self.state.sources[name] for name in sorted(self.state.sources)]


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
