"""The NATS column of the isolation matrix: project A's credentials have no route to project B's
cluster on the bus, because the two projects are separate NATS accounts.

Projects `team-a` and `team-b` each have a registered cluster with a running edge (a real leaf
nats-server with the credentials of its bundle), whose desired state, reports, inventory and
keys flow while the test probes. The probe is the strongest credential project A can have: a
user of A's account with no permission limits at all (a cluster's own credentials are narrower).
Each row names one of B's cluster's subjects and asserts what A sees:

- `service` rows: a request from A gets "no responders": nothing in A's account even listens
  there (in one shared account B's leaf would, whatever its permissions);
- `stream` rows: A subscribes and receives nothing, while a user of B's account subscribed to
  the same subject receives B's traffic (the control that proves traffic flowed);
- `jetstream` rows: A's JetStream API knows none of the hub's streams.

Every export and import that joins B's cluster to FLEET (`access.project_links`) must have a
row (`test_the_bus_matrix_has_a_row_for_every_link_of_a_cluster`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.client import RawCredentials
from nats.aio.msg import Msg

from access.nats_accounts import NatsAuthority, account_of_project
from access.nats_jwt import new_nkey
from access.project_links import account_links
from events.catalog import TaskApplied
from registry.projects import create_project, project_subject
from simulator.executor import SimExecutor
from taskset.projects import ProjectQuotas
from tests.eventually import eventually
from tests.integration.edge_harness import (
    EdgeHub,
    cluster_task,
    edge_hub,
    leaf_connections,
    sample_taskset,
)

A, B = "team-a", "team-b"
A_CLUSTER, B_CLUSTER = "team-a--east", "team-b--west"
RowKind = Literal["service", "stream", "shared"]


@dataclass(frozen=True)
class Row:
    kind: RowKind
    subject: str
    """One of B's cluster's subjects (a request subject, or what a subscriber listens on)."""
    link: str
    """The linked subject (as `access.project_links` writes it) this row stands for."""


ROWS = [
    Row(
        "service",
        f"fleet.jsapi.{B_CLUSTER}.CONSUMER.CREATE.DESIRED.JS_MIRROR_x.fleet.desired.{B_CLUSTER}.>",
        f"fleet.jsapi.{B_CLUSTER}.>",
    ),
    Row("service", f"fleet.keys.{B_CLUSTER}", f"fleet.keys.{B_CLUSTER}"),
    Row("service", f"$JS.edge-{B_CLUSTER}.API.INFO", f"$JS.edge-{B_CLUSTER}.API.>"),
    Row(
        "service",
        f"$JS.FC.REPORTS-{B_CLUSTER}.probe",
        f"$JS.FC.REPORTS-{B_CLUSTER}.>",
    ),
    Row("stream", f"fleet.sync.desired.{B_CLUSTER}.>", f"fleet.sync.desired.{B_CLUSTER}.>"),
    Row("stream", f"fleet.sync.reports.{B_CLUSTER}.>", f"fleet.sync.reports.{B_CLUSTER}.>"),
    Row("stream", f"fleet.inventory.{B_CLUSTER}", f"fleet.inventory.{B_CLUSTER}"),
    # Flow-control answers of DESIRED's consumers: one export for every project (their subjects
    # name no cluster). They carry no data; nothing of B can be read or asked through them.
    Row("shared", "$JS.FC.DESIRED.>", "$JS.FC.DESIRED.>"),
]


async def login(hub: EdgeHub, authority: NatsAuthority, project: str) -> NatsClient:
    """A user of `project`'s account with no permission limits."""
    creds = authority.user_credentials(account_of_project(project), new_nkey("user"), "probe")
    return await nats.connect(
        hub.server.client_url, user_credentials=RawCredentials(creds), max_reconnect_attempts=0
    )


async def new_project(hub: EdgeHub, name: str) -> None:
    await create_project(
        hub.store, name, quotas=ProjectQuotas(clusters=2), actor="admin", now=datetime.now(UTC)
    )
    async with asyncio.timeout(20):
        await hub.services.projects.wait_applied(
            await hub.store.subject_version(project_subject(name))
        )


@dataclass
class TwoProjects:
    hub: EdgeHub
    a: NatsClient
    b: NatsClient
    sims: dict[str, SimExecutor]


@asynccontextmanager
async def two_projects(root: Path) -> AsyncIterator[TwoProjects]:
    async with edge_hub(root) as hub:
        await new_project(hub, A)
        await new_project(hub, B)
        sims = {}
        for cluster in (A_CLUSTER, B_CLUSTER):
            sims[cluster] = SimExecutor(name=cluster)
            await hub.start_edge(await hub.register(cluster), executor=sims[cluster])
        authority = hub.data.nats_authority()
        a, b = await login(hub, authority, A), await login(hub, authority, B)
        try:
            yield TwoProjects(hub, a, b, sims)
        finally:
            await a.close()
            await b.close()


async def b_delivers_and_reports(world: TwoProjects, generation: int) -> None:
    """Make B's cluster receive desired state and report it (traffic on B's subjects)."""
    hub = world.hub
    await hub.write_desired(cluster_task(B_CLUSTER, sample_taskset("web"), generation=generation))
    sim = world.sims[B_CLUSTER]
    await eventually(
        lambda: "web" in sim.applied and sim.applied["web"].generation == generation,
        what=f"B's cluster applied generation {generation}",
    )

    async def reported() -> bool:
        return any(
            isinstance(event, TaskApplied)
            and origin == B_CLUSTER
            and event.generation == generation
            for origin, event, _ in await hub.reports()
        )

    await eventually(reported, what="B's report sourced into REPORTS")


async def test_project_a_has_no_route_to_project_b_clusters_subjects(tmp_path: Path) -> None:
    async with two_projects(tmp_path) as world:
        await b_delivers_and_reports(world, 1)
        # Each cluster's own credentials put its leaf connection in its own project's account.
        authority = world.hub.data.nats_authority()
        accounts = {
            str(leaf.get("name")): leaf.get("account")
            for leaf in leaf_connections(world.hub.server)
        }
        assert accounts == {
            f"edge-{A_CLUSTER}": authority.public_key(account_of_project(A)),
            f"edge-{B_CLUSTER}": authority.public_key(account_of_project(B)),
        }
        # Service rows: nothing listens in A's account; B's account does reach B's gate and keys.
        for row in ROWS:
            if row.kind != "service":
                continue
            with pytest.raises(nats.errors.NoRespondersError):
                await world.a.request(row.subject, b"{}", timeout=3)
        for subject in (ROWS[0].subject, ROWS[1].subject):
            answer = await world.b.request(subject, b"{}", timeout=5)
            assert answer.data, subject

        # Stream rows: A and B subscribe to the same subjects while B's traffic flows.
        seen: dict[str, dict[str, list[Msg]]] = {"a": {}, "b": {}}
        for who, nc in (("a", world.a), ("b", world.b)):
            for row in ROWS:
                if row.kind == "stream":
                    box = seen[who].setdefault(row.subject, [])

                    async def keep(msg: Msg, box: list[Msg] = box) -> None:
                        box.append(msg)

                    await nc.subscribe(row.subject, cb=keep)
            await nc.flush()
        await b_delivers_and_reports(world, 2)
        for row in ROWS:
            if row.kind == "stream":
                await eventually(
                    lambda row=row: len(seen["b"][row.subject]) > 0,
                    what=f"B's account to see traffic on {row.subject}",
                )
        await world.a.flush()
        for row in ROWS:
            if row.kind == "stream":
                assert seen["a"][row.subject] == [], row.subject

        # JetStream: A's account has none of the hub's streams (nor B's cluster's consumer).
        js = world.a.jetstream()
        assert [info.config.name for info in await js.streams_info()] == []
        for stream in ("DESIRED", "REPORTS", "EVENTS"):
            with pytest.raises(nats.js.errors.NotFoundError):
                await js.stream_info(stream)


async def test_the_bus_matrix_has_a_row_for_every_link_of_a_cluster() -> None:
    links = account_links([B_CLUSTER], lambda project: f"key-of-{project}")
    project_account = account_of_project(B)
    subjects = {
        dict(entry)["subject"]
        for entry in (*links[project_account].exports, *links[project_account].imports)
    }
    assert subjects == {row.link for row in ROWS}
