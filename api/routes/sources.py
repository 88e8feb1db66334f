"""Remote sources: publish once from a chart or Git reference, standing sources, credentials.

- `POST /api/v1/tasksets/remote`: the hub fetches the reference (within its allow-list and
  limits), normalizes and publishes it with its provenance, like an upload;
- `/api/v1/sources`: standing sources the hub checks on an interval and on demand
  (`POST /api/v1/sources/{name}/sync` checks now and says what happened);
- `/api/v1/source-credentials`: credentials for private repositories, registries and Git
  servers, admin only; they are written to the hub's data dir and never answered back (a
  listing shows the name, the kind and the user name).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import delete, get, post, put
from litestar.params import JSONBody, PathParameter

from api.auth import Role, requires
from api.context import Hub
from api.errors import InvalidRequest, ServiceUnavailable, register_status
from api.event_records import redact_values
from api.tenancy import Tenant, admit_publish
from events.catalog import Placement, Provenance, RolloutStrategy, SourceAdded
from events.ids import new_event_id
from registry.blueprints import dependency_events
from sources.credentials import Credential, CredentialSummary
from sources.errors import (
    CredentialsNotFound,
    HostNotAllowed,
    SourceDoesNotRender,
    SourceNotFound,
    SourceTimedOut,
    SourceTooLarge,
    SourceUnreachable,
)
from sources.publish import PublishSettings, default_name, fetch_and_publish
from sources.references import SourceRef, check_reference
from sources.service import SourceWatcher, add_source, remove_source
from sources.watch import SourceRecord

for _error, _status in (
    (HostNotAllowed, 403),
    (SourceTooLarge, 413),
    (SourceTimedOut, 504),
    (SourceUnreachable, 502),
    (SourceDoesNotRender, 422),
    (CredentialsNotFound, 404),
    (SourceNotFound, 404),
):
    register_status(_error, _status)

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
NameParam = Annotated[str, PathParameter(max_length=63)]
Text = Annotated[str, msgspec.Meta(max_length=2048)]


class SourceSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A chart in a Helm repository or OCI registry, or a directory of a Git repository."""

    kind: Literal["helm-repo", "oci", "git"]
    url: Text
    chart: Annotated[str, msgspec.Meta(max_length=253)] = ""
    version: Annotated[str, msgspec.Meta(max_length=128)] = ""
    """A chart version or semver constraint (`^1.2`); empty: the latest."""
    ref: Annotated[str, msgspec.Meta(max_length=255)] = ""
    path: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    plain_http: bool = False
    credentials: Annotated[str, msgspec.Meta(max_length=63)] = ""
    """The name of stored source credentials to fetch with."""

    def reference(self) -> SourceRef:
        return check_reference(
            SourceRef(
                kind=self.kind,
                url=self.url,
                chart=self.chart,
                version=self.version,
                ref=self.ref,
                path=self.path,
                plain_http=self.plain_http,
            )
        )


class RemotePublish(msgspec.Struct, frozen=True, kw_only=True):
    source: SourceSpec
    name: Name | None = None
    """The taskset; by default the chart's name (a Git source needs one)."""
    namespace: Name = "default"
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    placement: Placement = msgspec.field(default_factory=Placement)
    rollout: RolloutStrategy = msgspec.field(default_factory=RolloutStrategy)
    depends_on: list[Annotated[str, msgspec.Meta(max_length=63)]] | None = None


class RemotePublished(msgspec.Struct, frozen=True, kw_only=True):
    taskset: str
    version: int
    digest: str
    changed: bool
    sequence: int = 0
    body_size: int = 0
    provenance: Provenance | None = None
    notes: list[str] = msgspec.field(default_factory=list)


class StandingSource(msgspec.Struct, frozen=True, kw_only=True):
    name: Name
    taskset: Name | None = None
    """The taskset it publishes; by default the source's name."""
    source: SourceSpec
    namespace: Name = "default"
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    placement: Placement = msgspec.field(default_factory=Placement)
    rollout: RolloutStrategy = msgspec.field(default_factory=RolloutStrategy)
    interval_s: float = 300.0


class SourceView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    taskset: str
    kind: str
    url: str
    chart: str
    version: str
    ref: str
    path: str
    interval_s: float
    credentials: str
    placement: Placement
    values: dict[str, Any]
    added_at: str
    added_by: str
    failing: bool
    attempts: int
    last_error: str
    last_checked_at: str | None
    next_check_at: str | None
    published_version: int
    provenance: Provenance | None


class CheckView(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    taskset: str
    outcome: str
    version: int
    provenance: Provenance | None
    reason: str = ""


class CredentialInput(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["basic", "token", "ssh-key"]
    username: Annotated[str, msgspec.Meta(max_length=256)] = ""
    password: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    token: Annotated[str, msgspec.Meta(max_length=16384)] = ""
    ssh_key: Annotated[str, msgspec.Meta(max_length=16384)] = ""
    known_hosts: Annotated[str, msgspec.Meta(max_length=16384)] = ""


def _credential(hub: Hub, tenant: Tenant, name: str) -> Credential | None:
    """The stored credentials a request names: a project's are stored as `<project>--<name>`
    by an org admin, and a project can name no other."""
    return hub.source_credentials.get(tenant.full("credentials", name)) if name else None


@post(
    "/api/v1/tasksets/remote",
    guards=[requires(Role.publisher)],
    tags=["tasksets"],
    summary="Publish a taskset version fetched by the hub from a Helm repository, OCI registry "
    "or Git repository",
    status_code=201,
)
async def publish_remote(
    hub: Hub, tenant: Tenant, data: JSONBody[RemotePublish]
) -> RemotePublished:
    ref = data.source.reference()
    name = data.name or default_name(ref)
    if not name:
        raise InvalidRequest("a Git source needs a taskset name: set `name`")
    name = tenant.full("taskset", name)
    depends_on = (
        [tenant.full("taskset", d) for d in data.depends_on]
        if data.depends_on is not None
        else None
    )
    actor = tenant.principal.actor
    now = datetime.now(UTC)
    preceding = (
        await dependency_events(hub.store, name, depends_on, actor=actor, now=now)
        if depends_on is not None
        else []
    )
    published = await fetch_and_publish(
        hub.store,
        hub.charts,
        ref,
        PublishSettings(
            name=name,
            namespace=data.namespace,
            values=data.values,
            placement=data.placement,
            rollout=data.rollout,
        ),
        hub.source_policy,
        actor=actor,
        now=now,
        credential=_credential(hub, tenant, data.source.credentials),
        preceding=preceding,
        admit=functools.partial(admit_publish, hub),
    )
    outcome = published.outcome
    assert outcome is not None
    return RemotePublished(
        taskset=outcome.taskset,
        version=outcome.version,
        digest=outcome.digest,
        changed=outcome.changed,
        sequence=outcome.sequence,
        body_size=outcome.body_size,
        provenance=published.provenance,
        notes=list(published.notes),
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def source_view(record: SourceRecord) -> SourceView:
    d = record.definition
    return SourceView(
        name=d.source,
        taskset=d.taskset,
        kind=d.kind,
        url=d.url,
        chart=d.chart,
        version=d.chart_version,
        ref=d.ref,
        path=d.path,
        interval_s=d.interval_s,
        credentials=d.credentials,
        placement=d.placement,
        values=redact_values(d.values),
        added_at=d.occurred_at.isoformat(),
        added_by=d.actor,
        failing=record.attempts > 0,
        attempts=record.attempts,
        last_error=record.last_reason,
        last_checked_at=_iso(record.last_checked_at),
        next_check_at=_iso(record.next_check_at),
        published_version=record.last_version,
        provenance=record.last_provenance,
    )


def _watcher(hub: Hub) -> SourceWatcher:
    if hub.sources is None:
        raise ServiceUnavailable("this hub runs no source service")
    return hub.sources


@get(
    "/api/v1/sources", guards=[requires(Role.viewer)], tags=["sources"], summary="Standing sources"
)
async def list_sources(hub: Hub, tenant: Tenant) -> list[SourceView]:
    return [
        source_view(record)
        for record in _watcher(hub).records()
        if tenant.owns(record.definition.source)
    ]


@post(
    "/api/v1/sources",
    guards=[requires(Role.publisher)],
    tags=["sources"],
    summary="Add (or redefine) a standing source: the hub publishes each new version it finds",
    status_code=201,
)
async def add(hub: Hub, tenant: Tenant, data: JSONBody[StandingSource]) -> dict[str, Any]:
    watcher = _watcher(hub)
    ref = data.source.reference()
    source = tenant.full("source", data.name)
    credentials = (
        tenant.full("credentials", data.source.credentials) if data.source.credentials else ""
    )
    if credentials:
        hub.source_credentials.get(credentials)
    now = datetime.now(UTC)
    event_id = new_event_id(int(now.timestamp() * 1000))
    definition = SourceAdded(
        id=event_id,
        occurred_at=now,
        actor=tenant.principal.actor,
        correlation_id=event_id,
        causation_id=event_id,
        source=source,
        taskset=tenant.full("taskset", data.taskset or data.name),
        kind=ref.kind,
        url=ref.url,
        chart=ref.chart,
        chart_version=ref.version,
        ref=ref.ref,
        path=ref.path,
        namespace=data.namespace,
        values=data.values,
        placement=data.placement,
        rollout=data.rollout,
        interval_s=data.interval_s,
        credentials=credentials,
        plain_http=ref.plain_http,
    )
    changed = await add_source(hub.store, definition)
    watcher.wake()
    return {"source": source, "taskset": definition.taskset, "changed": changed}


@delete(
    "/api/v1/sources/{name:str}",
    guards=[requires(Role.publisher)],
    tags=["sources"],
    summary="Stop checking a source (what it published stays)",
    status_code=200,
)
async def remove(hub: Hub, tenant: Tenant, name: NameParam) -> dict[str, str]:
    name = tenant.own("source", name)
    await remove_source(hub.store, name, actor=tenant.principal.actor, now=datetime.now(UTC))
    return {"source": name}


@post(
    "/api/v1/sources/{name:str}/sync",
    guards=[requires(Role.publisher)],
    tags=["sources"],
    summary="Check a source now and publish what is new",
    status_code=200,
)
async def sync(hub: Hub, tenant: Tenant, name: NameParam) -> CheckView:
    name = tenant.own("source", name)
    result = await _watcher(hub).sync(name)
    return CheckView(
        source=result.source,
        taskset=result.taskset,
        outcome=result.outcome,
        version=result.version,
        provenance=result.provenance,
        reason=result.reason,
    )


@get(
    "/api/v1/source-credentials",
    guards=[requires(Role.admin, org=True)],
    tags=["sources"],
    summary="Stored source credentials: names, kinds and user names, never secrets",
)
async def list_credentials(hub: Hub) -> list[CredentialSummary]:
    return hub.source_credentials.summaries()


@put(
    "/api/v1/source-credentials/{name:str}",
    guards=[requires(Role.admin, org=True)],
    tags=["sources"],
    summary="Store credentials for private repositories, registries or Git servers",
)
async def set_credentials(
    hub: Hub, name: NameParam, data: JSONBody[CredentialInput]
) -> CredentialSummary:
    credential = Credential(**msgspec.structs.asdict(data))
    hub.source_credentials.set(name, credential)
    return CredentialSummary(name=name, kind=credential.kind, username=credential.username)


@delete(
    "/api/v1/source-credentials/{name:str}",
    guards=[requires(Role.admin, org=True)],
    tags=["sources"],
    summary="Forget stored source credentials",
    status_code=200,
)
async def remove_credentials(hub: Hub, name: NameParam) -> dict[str, str]:
    hub.source_credentials.remove(name)
    return {"name": name}


ROUTES = [
    publish_remote,
    list_sources,
    add,
    remove,
    sync,
    list_credentials,
    set_credentials,
    remove_credentials,
]
