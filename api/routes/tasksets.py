"""`/api/v1/tasksets`: publish a new version from an upload, retire a taskset.

A publish is one multipart request: `source` is the upload (a Helm chart .tgz, a Kustomize or
YAML directory as .tar.gz, or a YAML file) and `spec` is a JSON document with the name,
namespace, Helm values, placement and rollout. Archives are unpacked by `api.archives` into a
temporary directory and refused, naming the entry, when they try anything outside it; the
normalizer then reads the directory exactly as it reads one on the CLI's disk. Normalizing runs
in a worker thread: rendering a chart must not stall the live streams.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import anyio.to_thread
import msgspec
from litestar import post
from litestar.datastructures import UploadFile
from litestar.params import JSONBody, MultipartBody, PathParameter

from api.archives import (
    archive_root,
    extract_archive,
    is_archive,
)
from api.auth import Role, requires
from api.context import Hub
from api.errors import (
    ApiError,
    FieldProblem,
    InvalidRequest,
    RequestTooLarge,
    problems_from_msgspec,
)
from api.tenancy import Tenant, admit_publish
from events.catalog import Placement, RolloutStrategy
from normalizer import NormalizedSource, NormalizeOptions, normalize
from normalizer.errors import RefusedReference
from normalizer.kustomize_references import check_overlay
from registry.blueprints import dependency_events
from registry.overrides import load_latest_snapshot
from registry.tasksets import publish_taskset, retire_taskset, rollback_taskset
from taskset.errors import FleetbusError
from taskset.model import Taskset
from taskset.projects import DEFAULT_PROJECT

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]


class PublishSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What to publish the uploaded source as."""

    name: Name | None = None
    """The taskset's name; taken from the chart or directory when omitted (YAML files need it)."""
    namespace: Name = "default"
    format: Literal["helm", "kustomize", "yaml"] | None = None
    """Detected from the upload when omitted."""
    path: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    """The directory inside the archive to read (a Kustomize overlay next to its bases);
    by default the archive's top directory."""
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    """Helm values (charts only)."""
    placement: Placement = msgspec.field(default_factory=Placement)
    rollout: RolloutStrategy = msgspec.field(default_factory=RolloutStrategy)
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    """Taskset spec fields (`driftPolicy`, `ignorePaths`, `adopt`, `objects`, `stepJobs`, as in
    fleetbus.yaml); they win over a fleetbus.yaml in the upload."""
    depends_on: list[Annotated[str, msgspec.Meta(max_length=63)]] | None = None
    """Tasksets that must be applied and Ready on a cluster before this one; None leaves the
    recorded dependencies as they are, [] removes them."""


@dataclass
class PublishForm:
    spec: str
    """The PublishSpec as JSON."""
    source: UploadFile


class Published(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    version: int
    digest: str
    changed: bool
    """False when the same content, placement and rollout were already published."""
    sequence: int = 0
    body_size: int = 0
    left_out: list[str] = msgspec.field(default_factory=list)
    """Objects deliberately not taken (Helm test and rollback hooks)."""


class RetireRequest(msgspec.Struct, frozen=True, kw_only=True):
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class RollbackRequest(msgspec.Struct, frozen=True, kw_only=True):
    to_version: Annotated[int, msgspec.Meta(ge=1)]
    """The version whose snapshot is published again, as the next version."""


class Retired(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    version: int
    sequence: int


def parse_spec(text: str) -> PublishSpec:
    try:
        return msgspec.json.decode(text, type=PublishSpec)
    except msgspec.ValidationError as e:
        problems = problems_from_msgspec(e, source="spec")
        raise InvalidRequest(
            "invalid publish spec: " + "; ".join(p.sentence() for p in problems), errors=problems
        ) from e
    except msgspec.DecodeError as e:
        raise InvalidRequest(f"the `spec` field is not JSON: {e}") from e


def normalize_upload(
    data: bytes, filename: str, spec: PublishSpec, previous: Taskset | None = None
) -> NormalizedSource:
    """Unpack (safely) and normalize an upload; runs in a worker thread.

    `previous` is the version published last: a chart's generated values (passwords) keep
    what it holds, so the same inputs publish as "unchanged" and nothing rotates.
    """
    values = [spec.values] if spec.values else []
    options = NormalizeOptions(
        name=spec.name,
        namespace=spec.namespace,
        format=spec.format,
        values=values,
        previous=previous,
        settings=spec.settings,
        settings_label="spec.settings",
    )
    if not is_archive(data):
        if spec.format not in (None, "yaml"):
            raise InvalidRequest(
                f"{filename or 'the upload'} is not a tar or tar.gz archive, so it cannot be "
                f"a {spec.format} source; upload the directory as .tar.gz"
            )
        if spec.name is None:
            raise InvalidRequest("a YAML upload needs a taskset name: set `name` in the spec")
        return normalize(
            data,
            NormalizeOptions(
                name=spec.name,
                namespace=spec.namespace,
                settings=spec.settings,
                settings_label="spec.settings",
            ),
        )
    with tempfile.TemporaryDirectory(prefix="fleetbus-upload-") as tmp:
        try:
            extract_archive(data, Path(tmp))
            directory = source_directory(Path(tmp), spec.path)
            check_overlay(directory, inside=Path(tmp))
            return normalize(directory, options)
        except ApiError:
            raise
        except RefusedReference as e:
            # Named relative to the upload already; the problem says which rule, where.
            problem = FieldProblem(
                field=e.field,
                rule=e.rule,
                position=f"{e.file}: {e.field}",
                source="upload",
                value=e.value,
            )
            raise InvalidRequest(str(e), {"entry": e.file}, errors=[problem]) from e
        except FleetbusError as e:
            # Name files as they are in the upload, never by the hub's temporary directory.
            upload = filename or "the upload"
            message = str(e)
            for root in {tmp, os.path.realpath(tmp)}:
                message = message.replace(f"{root}/", f"{upload}:").replace(root, upload)
            raise InvalidRequest(message) from e


def source_directory(extracted: Path, path: str) -> Path:
    """The directory of an unpacked upload that holds the source."""
    if not path:
        return archive_root(extracted)
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts:
        raise InvalidRequest(f"`path` {path!r} must be a relative path inside the archive")
    for base in (extracted, archive_root(extracted)):
        candidate = base.joinpath(*relative.parts)
        if candidate.is_dir() and not candidate.is_symlink():
            return candidate
    raise InvalidRequest(f"`path` {path!r} is not a directory of the uploaded archive")


def in_project(tenant: Tenant, spec: PublishSpec) -> PublishSpec:
    """`spec` with its names full in the request's project (placement, dependencies)."""
    return msgspec.structs.replace(
        spec,
        name=tenant.full("taskset", spec.name) if spec.name is not None else None,
        placement=msgspec.structs.replace(
            spec.placement,
            clusters=[tenant.full("cluster", c) for c in spec.placement.clusters],
        ),
        depends_on=[tenant.full("taskset", d) for d in spec.depends_on]
        if spec.depends_on is not None
        else None,
    )


@post(
    "/api/v1/tasksets",
    guards=[requires(Role.publisher)],
    tags=["tasksets"],
    summary="Publish a taskset version from an uploaded chart, overlay or YAML",
    status_code=201,
)
async def publish(
    hub: Hub,
    tenant: Tenant,
    data: MultipartBody[PublishForm],
) -> Published:
    spec = in_project(tenant, parse_spec(data.spec))
    upload = await data.source.read()
    if len(upload) > hub.max_body_bytes:
        raise RequestTooLarge(f"the upload is over the limit of {hub.max_body_bytes:,} bytes")
    filename = data.source.filename or ""
    if spec.name is None and not tenant.whole_hub and tenant.name != DEFAULT_PROJECT:
        # Named by the chart or directory: render again under its full name in the project.
        found = await anyio.to_thread.run_sync(normalize_upload, upload, filename, spec, None)
        spec = msgspec.structs.replace(spec, name=tenant.full("taskset", found.taskset.name))
    latest = await load_latest_snapshot(hub.store, spec.name) if spec.name else None
    previous = latest.snapshot.taskset if latest is not None and not latest.retired else None
    source = await anyio.to_thread.run_sync(normalize_upload, upload, filename, spec, previous)
    actor = tenant.principal.actor
    now = datetime.now(UTC)
    preceding = (
        await dependency_events(
            hub.store, source.taskset.name, spec.depends_on, actor=actor, now=now
        )
        if spec.depends_on is not None
        else []
    )
    outcome = await publish_taskset(
        hub.store,
        hub.charts,
        source,
        actor=actor,
        now=now,
        placement=spec.placement,
        rollout=spec.rollout,
        preceding=preceding,
        admit=functools.partial(admit_publish, hub),
    )
    return Published(
        taskset=outcome.taskset,
        version=outcome.version,
        digest=outcome.digest,
        changed=outcome.changed,
        sequence=outcome.sequence,
        body_size=outcome.body_size,
        left_out=list(source.left_out),
    )


@post(
    "/api/v1/tasksets/{name:str}/retire",
    guards=[requires(Role.publisher)],
    tags=["tasksets"],
    summary="Retire a taskset: every cluster removes it (running preDelete first)",
    status_code=200,
)
async def retire(
    hub: Hub,
    tenant: Tenant,
    name: Annotated[str, PathParameter(max_length=63)],
    data: JSONBody[RetireRequest | None] = None,
) -> Retired:
    outcome = await retire_taskset(
        hub.store,
        tenant.own("taskset", name),
        actor=tenant.principal.actor,
        now=datetime.now(UTC),
        reason=data.reason if data else "",
    )
    return Retired(taskset=outcome.taskset, version=outcome.version, sequence=outcome.sequence)


@post(
    "/api/v1/tasksets/{name:str}/rollback",
    guards=[requires(Role.publisher)],
    tags=["tasksets"],
    summary="Publish an earlier version's snapshot again, as the next version",
    status_code=200,
)
async def rollback(
    hub: Hub,
    tenant: Tenant,
    name: Annotated[str, PathParameter(max_length=63)],
    data: JSONBody[RollbackRequest],
) -> Published:
    outcome = await rollback_taskset(
        hub.store,
        tenant.own("taskset", name),
        data.to_version,
        actor=tenant.principal.actor,
        now=datetime.now(UTC),
    )
    return Published(
        taskset=outcome.taskset,
        version=outcome.version,
        digest=outcome.digest,
        changed=outcome.changed,
        sequence=outcome.sequence,
        body_size=outcome.body_size,
    )


ROUTES = [publish, retire, rollback]
