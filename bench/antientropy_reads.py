"""Anti-entropy under a burst of inventory digests: one DESIRED read per cluster vs batched.

A real hub nats-server holds DESIRED for `--clusters` clusters (`--tasksets` each); every
cluster sends its inventory digest at once (as a fleet does when the hub comes back), all in
agreement with DESIRED (the common case). The hub's anti-entropy service takes them from its
subscription and compares each with its cluster's slice of DESIRED. Measured: the time from the
first digest sent until every digest is compared, and the number of DESIRED reads, with
`per_read=1` (one batched direct get per cluster: how it worked before) and with the default
`CLUSTERS_PER_READ`. Each mode is run `--rounds` times alternately; medians are reported.

    python -m bench.antientropy_reads --clusters 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from events.catalog import AntiEntropyRepaired
from events.inventory import InventoryDigest, TasksetState, desired_state_digest, encode_inventory
from events.store import EventStore, connect
from events.streams import hub_streams
from events.tasks import cancel_and_wait
from fleetbus.datadir import DataDir
from fleetbus.hub import start_hub_nats
from fleetbus.natsserver import free_port
from scheduler.antientropy import CLUSTERS_PER_READ, AntiEntropyService

STATE = TasksetState(generation=1, digest="bench")


async def fill_desired(store: EventStore, clusters: list[str], tasksets: int) -> None:
    js = store.nc.jetstream()
    for cluster in clusters:
        for n in range(tasksets):
            await js.publish_async(
                f"fleet.desired.{cluster}.app{n}",
                b"x" * 200,
                headers={
                    "Fleetbus-Generation": str(STATE.generation),
                    "Fleetbus-Digest": STATE.digest,
                    "Fleetbus-Removed": "false",
                },
            )
    await js.publish_async_completed()


class WatchedService(AntiEntropyService):
    """The service, telling when `expect` digests have been compared in all."""

    expect = 0
    all_compared: asyncio.Event

    async def check_many(self, digests: Sequence[tuple[str, bytes]]) -> list[AntiEntropyRepaired]:
        repaired = await super().check_many(digests)
        if self.expect and self.compared >= self.expect:
            self.all_compared.set()
        return repaired


async def burst(
    store: EventStore, sender: EventStore, payloads: list[tuple[str, bytes]], per_read: int
) -> tuple[float, int]:
    """Seconds until every digest is compared, and the DESIRED reads it took."""
    service = WatchedService(
        store, settle=timedelta(seconds=10), cooldown=timedelta(seconds=30), per_read=per_read
    )
    service.all_compared = asyncio.Event()
    running = asyncio.create_task(service.run())
    try:
        # Subscribed once a probe digest is seen (core NATS drops what nobody listens to yet).
        while "probe" not in service.last_seen:
            await sender.nc.publish("fleet.inventory.probe", _digest("probe", 0))
            await sender.nc.flush()
            await asyncio.sleep(0.05)
        service.expect = service.compared + len(payloads)
        start_reads = service.reads
        began = time.perf_counter()
        for subject, payload in payloads:
            await sender.nc.publish(subject, payload)
        await sender.nc.flush()
        await service.all_compared.wait()
        return time.perf_counter() - began, service.reads - start_reads
    finally:
        await cancel_and_wait([running])


def _digest(cluster: str, tasksets: int) -> bytes:
    desired = {f"app{n}": STATE for n in range(tasksets)}
    return encode_inventory(
        InventoryDigest(
            cluster=cluster,
            sent_at=datetime.now(UTC),
            desired=desired,
            desired_digest=desired_state_digest(desired),
        )
    )


async def measure(clusters: int, tasksets: int, rounds: int) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="fleetbus-ae-bench-"))
    data = DataDir(root / "hub")
    server = start_hub_nats(data, host="127.0.0.1", port=free_port())
    try:
        store = EventStore(await connect(server.client_url, credentials=data.hub_credentials))
        sender = EventStore(await connect(server.client_url, credentials=data.hub_credentials))
        try:
            await store.ensure_streams(hub_streams())
            names = [f"sim-{n:05d}" for n in range(clusters)]
            await fill_desired(store, names, tasksets)
            payloads = [(f"fleet.inventory.{name}", _digest(name, tasksets)) for name in names]
            seconds: dict[str, list[float]] = {"per_cluster": [], "batched": []}
            reads: dict[str, int] = {}
            for _ in range(rounds):
                for mode, per_read in (("per_cluster", 1), ("batched", CLUSTERS_PER_READ)):
                    took, count = await burst(store, sender, payloads, per_read)
                    seconds[mode].append(took)
                    reads[mode] = count
        finally:
            await sender.close()
            await store.close()
    finally:
        server.stop()
    per_cluster = statistics.median(seconds["per_cluster"])
    batched = statistics.median(seconds["batched"])
    return {
        "clusters": clusters,
        "tasksets_per_cluster": tasksets,
        "rounds": rounds,
        "per_cluster_s": round(per_cluster, 3),
        "batched_s": round(batched, 3),
        "speedup": round(per_cluster / batched, 1) if batched else None,
        "per_cluster_reads": reads["per_cluster"],
        "batched_reads": reads["batched"],
        "all_s": {mode: [round(s, 3) for s in values] for mode, values in seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--tasksets", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.clusters, args.tasksets, args.rounds)), indent=2))


if __name__ == "__main__":
    main()
