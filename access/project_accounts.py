"""Every project's NATS account, kept equal to what the log says about the project.

A project is a NATS account of its own (`project-<name>`; the default project's is FLEET, the
account of a single-team hub, which this service never touches). `ProjectAccountService` folds
the `fleet.evt.project.>` events (`evolve_project_limits`): `ProjectCreated` makes the account,
`ProjectQuotasSet` changes its JetStream limits, both derived from the project's quotas by
`project_limits`. Each change is an account JWT signed by the operator and pushed to the
nats-based resolver (`access.account_push`), so it reaches every server of the hub without a
config change or a reload.

At start the service reconciles every project the log knows: an account the servers already
hold with the same limits is left as it is (no push, no new JWT), a missing one is created, a
stale one is pushed again. Starting twice changes nothing. It records the last project event it
has made effective, which is what `project create` and `project quotas` wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from access.account_push import AccountPublisher
from access.nats_accounts import (
    DEFAULT_PROJECT,
    NatsAuthority,
    ProjectLimits,
    account_of_project,
)
from access.nats_jwt import JwtError, decode
from events import subjects
from events.catalog import Event, ProjectCreated, ProjectQuotasSet
from events.store import EventStore, StoredEvent
from taskset.projects import ProjectQuotas

log = logging.getLogger(__name__)

PROJECT_EVENTS = f"{subjects.EVENTS_PREFIX}.project.>"

STORAGE_PER_CLUSTER = 256 << 20
"""File storage a project's account gets per cluster of its quota: the cluster's desired state
and the reports the hub keeps of it."""
CONSUMERS_PER_CLUSTER = 4
"""Consumers per cluster of its quota: the durable its edge pulls, up to two consumers of its
leaf's mirror (one briefly replacing a stalled one), and the one sourcing its outbox."""
STREAMS_PER_CLUSTER = 1
PROJECT_STREAMS = 2
"""Streams of the project itself (its desired state and its reports), besides one per cluster."""


def project_limits(quotas: ProjectQuotas) -> ProjectLimits:
    """The JetStream limits of a project's account, from its quotas.

    They scale with the cluster quota: storage `STORAGE_PER_CLUSTER`, consumers
    `CONSUMERS_PER_CLUSTER` and streams `STREAMS_PER_CLUSTER` per cluster (plus
    `PROJECT_STREAMS`); memory storage is not used (every stream is on file). A project without
    a cluster quota (0: no limit) has no JetStream limit either. The log's bytes (quota
    `log_bytes`) are checked where tasksets are published: the log is the hub's, not the
    project account's."""
    if quotas.clusters <= 0:
        return ProjectLimits()
    return ProjectLimits(
        storage_bytes=quotas.clusters * STORAGE_PER_CLUSTER,
        memory_bytes=0,
        streams=quotas.clusters * STREAMS_PER_CLUSTER + PROJECT_STREAMS,
        consumers=quotas.clusters * CONSUMERS_PER_CLUSTER,
    )


def evolve_project_limits(
    limits: Mapping[str, ProjectLimits], event: Event
) -> dict[str, ProjectLimits]:
    """The account limits of every project after `event` (other events change nothing)."""
    updated = dict(limits)
    match event:
        case ProjectCreated() if event.project != DEFAULT_PROJECT:
            updated[event.project] = project_limits(event.quotas)
        case ProjectQuotasSet() if event.project in updated:
            updated[event.project] = project_limits(event.quotas)
    return updated


def holds_limits(token: str | None, name: str, limits: ProjectLimits) -> bool:
    """Whether the account JWT `token` (a server's) names account `name` with `limits`."""
    if token is None:
        return False
    try:
        claims = decode(token)
    except JwtError:
        return False
    held = (claims.get("nats") or {}).get("limits") or {}
    wanted = limits.jetstream().claims()
    return claims.get("name") == name and all(held.get(k) == v for k, v in wanted.items())


class ProjectAccountService:
    """Keeps one NATS account per project, with its quotas' limits, on every server."""

    def __init__(
        self,
        store: EventStore,
        *,
        authority: NatsAuthority,
        publisher: AccountPublisher,
        sign: Callable[[str], str] | None = None,
        pushing: asyncio.Lock | None = None,
    ) -> None:
        self.store = store
        self.authority = authority
        self.publisher = publisher
        self.sign = sign or authority.account_jwt
        """Signs an account's whole JWT: `ClusterAccessService.account_jwt`, so the account's
        revocations and its clusters' links stay in it."""
        self.pushing = pushing or asyncio.Lock()
        """Shared with the cluster access service: one account push at a time."""
        self.limits: dict[str, ProjectLimits] = {}
        """Each project's account limits, as the log says (the default project is not here)."""
        self.pushes = 0
        """Account JWTs pushed since start (what a reconcile had to change)."""
        self.applied_seq = 0
        self._applied = asyncio.Condition()

    async def ensure(self, project: str, limits: ProjectLimits) -> bool:
        """Make the project's account hold `limits` on every server; whether a JWT was pushed
        (False: the servers held it already)."""
        name = account_of_project(project)
        known = name in self.authority.accounts and self.authority.limits.get(name) == limits
        if known:
            held = await self.publisher.lookup(self.authority.public_key(name))
            if holds_limits(held, name, limits):
                return False
        async with self.pushing:
            self.authority.ensure_project_account(project, limits)
            servers = await self.publisher.push([self.sign(name)])
        self.pushes += 1
        log.info(
            "NATS account %s of project %s on %d servers: %s",
            name,
            project,
            servers,
            _describe(limits),
        )
        return True

    async def _applied_up_to(self, seq: int) -> None:
        self.applied_seq = seq
        async with self._applied:
            self._applied.notify_all()

    async def wait_applied(self, seq: int) -> None:
        """Wait until the project event at `seq` is effective (bound it with
        `asyncio.timeout`)."""
        async with self._applied:
            await self._applied.wait_for(lambda: self.applied_seq >= seq)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Reconcile every project's account with the log, then follow new project events."""
        last = 0
        self.limits = {}
        async for stored in self.store.read(subject=PROJECT_EVENTS, skip_undecodable=True):
            self.limits = evolve_project_limits(self.limits, stored.event)
            last = stored.seq
        for project, limits in sorted(self.limits.items()):
            await self.ensure(project, limits)
        await self._applied_up_to(last)
        if ready is not None:
            ready.set()
        following = self.store.follow(
            from_seq=last + 1, subject=PROJECT_EVENTS, skip_undecodable=True
        )
        async with contextlib.aclosing(following) as events:
            async for stored in events:
                await self._apply(stored)

    async def _apply(self, stored: StoredEvent) -> None:
        before = self.limits
        self.limits = evolve_project_limits(before, stored.event)
        for project, limits in sorted(self.limits.items()):
            if before.get(project) != limits:
                await self.ensure(project, limits)
        await self._applied_up_to(stored.seq)


def _describe(limits: ProjectLimits) -> str:
    def figure(value: int) -> str:
        return "unlimited" if value == -1 else str(value)

    return (
        f"storage {figure(limits.storage_bytes)} bytes, streams {figure(limits.streams)}, "
        f"consumers {figure(limits.consumers)}"
    )
