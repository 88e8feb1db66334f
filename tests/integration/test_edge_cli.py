"""`fleetbus cluster register --out`, `fleetbus edge`, `fleetbus cluster rm`, as users run them."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import orjson
import yaml

from edge_connector.simulator import SimExecutor
from fleetbus.bundle import read_edge_bundle
from fleetbus.cli import main
from fleetbus.pki import cluster_of_certificate
from tests.integration.edge_harness import (
    cluster_task,
    edge_hub,
    eventually,
    leaf_names,
    sample_taskset,
)


async def test_register_writes_a_bundle_an_edge_joins_with_and_rm_revokes_it(
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        hub.data.write_hub_info({"nats_url": hub.server.client_url, "leaf_urls": [hub.leaf_url]})
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
    tmp_path: Path,
) -> None:
    async with edge_hub(tmp_path) as hub:
        hub.data.write_hub_info({"nats_url": hub.server.client_url})
        data = ["--data-dir", str(hub.data.root)]
        code = await asyncio.to_thread(
            main, ["cluster", "register", "alpha", "--out", str(tmp_path / "b"), *data]
        )
        assert code == 2
        assert not (tmp_path / "b" / "cluster.key").exists()
