"""`fleetbus cluster register --out`, `fleetbus edge`, `fleetbus cluster rm`, as users run them.

The CLI talks to the hub's API, found as users find it: `hub.json` and `admin.token` in the
hub's data dir. The API enrolls clusters through the hub's real edge services, as under
`fleetbus up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import yaml

from access.pki import cluster_of_certificate
from api.auth import Role
from events.store import EventStore
from fleetbus.bundle import read_edge_bundle
from fleetbus.cli import main
from fleetbus.datadir import DataDir
from fleetbus.enrollment import connect_api_to_edges
from simulator.executor import SimExecutor
from tests.conftest import HubNats
from tests.eventually import eventually
from tests.integration.api_harness import LiveApi, live_api
from tests.integration.edge_harness import (
    EdgeHub,
    cluster_task,
    edge_hub,
    leaf_names,
    sample_taskset,
)


@contextlib.asynccontextmanager
async def api_for_cli(
    store: EventStore, data: DataDir, nats_url: str, edges: EdgeHub | None = None
) -> AsyncIterator[LiveApi]:
    """The hub's API, written into its data dir for the CLI; enrolling through `edges`."""
    async with live_api(store, data.root) as api:
        if edges is not None:
            connect_api_to_edges(api.hub, edges.services)
        data.write_hub_info({"nats_url": nats_url, "http_url": api.url})
        (data.root / "admin.token").write_text(api.tokens[Role.admin])
        yield api


async def test_register_writes_a_bundle_an_edge_joins_with_and_rm_revokes_it(
    tmp_path: Path,
) -> None:
    async with (
        edge_hub(tmp_path) as hub,
        api_for_cli(hub.store, hub.data, hub.server.client_url, hub),
    ):
        data = ["--data-dir", str(hub.data.root)]
        out = tmp_path / "bundle-alpha"
        code = await asyncio.to_thread(
            main, ["cluster", "register", "alpha", "--label", "env=prod", "--out", str(out), *data]
        )
        assert code == 0
        bundle = read_edge_bundle(out)
        assert bundle.settings.hub_urls == [hub.leaf_url]
        assert bundle.settings.labels == {"env": "prod"}
        assert cluster_of_certificate(bundle.cert_file.read_bytes()) == "alpha"
        assert stat.S_IMODE(os.stat(bundle.key_file).st_mode) == 0o600
        values = yaml.safe_load((out / "values.yaml").read_text())
        assert values["cluster"] == "alpha"
        assert values["tls"]["key"].startswith("-----BEGIN PRIVATE KEY-----")
        assert "remotes" in (out / "leaf.conf").read_text()
        assert orjson.loads((out / "cluster.json").read_bytes())["name"] == "alpha"

        sim = SimExecutor(name="alpha")
        await hub.start_edge(bundle, executor=sim)
        await eventually(lambda: "edge-alpha" in leaf_names(hub.server), what="alpha's leaf")
        await hub.write_desired(cluster_task("alpha", sample_taskset("web")))
        await eventually(lambda: "web" in sim.applied, what="apply")

        assert await asyncio.to_thread(main, ["cluster", "rm", "alpha", *data]) == 0
        await eventually(
            lambda: "edge-alpha" not in leaf_names(hub.server), what="alpha's leaf dropped"
        )


async def test_register_with_an_out_dir_needs_a_hub_with_a_leafnode_listener(
    hub_nats: HubNats, event_store: EventStore, tmp_path: Path
) -> None:
    async with api_for_cli(event_store, hub_nats.data, hub_nats.url):
        data = ["--data-dir", str(hub_nats.data.root)]
        code = await asyncio.to_thread(
            main, ["cluster", "register", "alpha", "--out", str(tmp_path / "b"), *data]
        )
        assert code == 2
        assert not (tmp_path / "b" / "cluster.key").exists()
        assert not (tmp_path / "b").exists(), "the directory made for the bundle is removed"
