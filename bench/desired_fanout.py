"""`python -m bench.desired_fanout`: what nats-server alone costs to deliver one message to each of
N filtered pull consumers on one stream shaped like DESIRED, at several N.

P2 waits mostly for DESIRED writes at 10,000 clusters, and its cost per cluster grows with the
fleet. This measures the server's part without fleetbus in the way: one nats-server (file
storage, the DESIRED stream's settings), N durable pull consumers each filtered on its own
cluster's subjects (`fleet.desired.c<i>.>`, configured as the hub provisions them) with a pull
request pending (batch 100, as the connector keeps one), all read by a few connections in this
process, which acknowledge each message. One message per consumer is written pipelined (a first
version, then an update that replaces every one of them), and the time until every consumer
has received its message is reported with the time until every write was acknowledged.

Variants, to tell the cause apart:
- `--filter literal`: each consumer filtered on its one subject (`fleet.desired.c<i>.app`)
  instead of the cluster's wildcard;
- `--filter subjects`: each consumer filtered on a list of two literal subjects (its
  `.app` and another), as a durable following the tasksets placed on its cluster would be;
- `--shards K`: the N clusters spread over K streams (`DESIRED_<k>`), each holding N/K.

The server's CPU time for each round comes from /proc. Prints one JSON line per round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.procstat import CLOCK_TICKS, cpu_ticks
from events.edges import desired_durable
from events.streams import desired_stream
from fleetbus.natsserver import find_nats_server, free_port
from scheduler.provisioning import durable_config

CONNECTIONS = 8
"""Connections reading the consumers (the consumers are spread over them)."""
PULL_BATCH = 100
WINDOW = 512
SETTLE_S = 600.0
FILTERINGS = ("wildcard", "literal", "subjects")


def stream_config(name: str, prefix: str, count: int) -> dict[str, Any]:
    """DESIRED's own settings (`events.streams.desired_stream`), under its own subjects."""
    config = desired_stream()
    config.update(name=name, subjects=[f"{prefix}.>"], max_consumers=count + 16)
    return config


def consumer_config(cluster: str, filter_subject: str) -> dict[str, Any]:
    """The durable the hub provisions for a cluster (`scheduler.provisioning.durable_config`),
    with `filter_subject` as its filter."""
    config = durable_config(cluster)
    config["filter_subject"] = filter_subject
    return config


class Fanout:
    def __init__(self, count: int, shards: int, filtering: str, payload: bytes) -> None:
        self.count = count
        self.shards = shards
        self.filtering = filtering
        self.payload = payload
        self.received: dict[int, float] = {}
        self.done = asyncio.Event()
        self.readers: list[Client] = []

    def shard_of(self, index: int) -> int:
        return index % self.shards

    def subject(self, index: int) -> str:
        return f"fleet.desired.s{self.shard_of(index)}.c{index}.app"

    def consumer(self, index: int) -> dict[str, Any]:
        config = consumer_config(f"c{index}", f"fleet.desired.s{self.shard_of(index)}.c{index}.>")
        if self.filtering == "literal":
            config["filter_subject"] = self.subject(index)
        elif self.filtering == "subjects":
            del config["filter_subject"]
            config["filter_subjects"] = [self.subject(index), f"{self.subject(index)}-other"]
        return config

    def stream(self, index: int) -> str:
        return f"DESIRED_{self.shard_of(index)}"

    async def setup(self, url: str) -> Client:
        admin = await nats.connect(url, name="fanout-admin")
        for shard in range(self.shards):
            await self._api(
                admin,
                f"$JS.API.STREAM.CREATE.DESIRED_{shard}",
                stream_config(f"DESIRED_{shard}", f"fleet.desired.s{shard}", self.count),
            )
        gate = asyncio.Semaphore(48)

        async def create(index: int) -> None:
            async with gate:
                config = self.consumer(index)
                await self._api(
                    admin,
                    f"$JS.API.CONSUMER.CREATE.{self.stream(index)}.{config['durable_name']}",
                    {"stream_name": self.stream(index), "config": config},
                )

        await asyncio.gather(*(create(i) for i in range(self.count)))
        for conn in range(CONNECTIONS):
            nc = await nats.connect(url, name=f"fanout-reader-{conn}")
            self.readers.append(nc)
            await nc.subscribe(
                f"_FAN.{conn}.*", cb=self._receive, pending_msgs_limit=0, pending_bytes_limit=0
            )
        for index in range(self.count):
            await self._pull(index)
        for nc in self.readers:
            await nc.flush()
        return admin

    async def _api(self, nc: Client, subject: str, body: dict[str, Any]) -> None:
        reply = await nc.request(subject, orjson.dumps(body), timeout=30)
        answer = orjson.loads(reply.data)
        if answer.get("error"):
            raise RuntimeError(f"{subject}: {answer['error']}")

    async def _pull(self, index: int) -> None:
        conn = index % CONNECTIONS
        body = orjson.dumps({"batch": PULL_BATCH, "expires": 600 * 1_000_000_000})
        await self.readers[conn].publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self.stream(index)}.{desired_durable(f'c{index}')}",
            body,
            reply=f"_FAN.{conn}.{index}",
        )

    async def _receive(self, msg: Msg) -> None:
        if not msg.data:
            return  # a status (request ended)
        index = int(msg.subject.split(".")[3][1:])
        self.received.setdefault(index, time.monotonic())
        await self.readers[index % CONNECTIONS].publish(msg.reply, b"+ACK")
        if len(self.received) == self.count:
            self.done.set()

    async def write_all(self, writer: Client, settle: float) -> float:
        """Write one message per cluster, `WINDOW` in flight; seconds until all acknowledged."""
        started = time.monotonic()
        acked = 0
        all_acked = asyncio.Event()
        window = asyncio.Semaphore(WINDOW)

        async def on_ack(_: Msg) -> None:
            nonlocal acked
            acked += 1
            window.release()
            if acked == self.count:
                all_acked.set()

        inbox = writer.new_inbox()
        sub = await writer.subscribe(
            f"{inbox}.*", cb=on_ack, pending_msgs_limit=0, pending_bytes_limit=0
        )
        for index in range(self.count):
            await window.acquire()
            await writer.publish(self.subject(index), self.payload, reply=f"{inbox}.{index}")
        await asyncio.wait_for(all_acked.wait(), settle)
        await sub.unsubscribe()
        return time.monotonic() - started


def start_server(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = directory / "fanout.conf"
    config.write_text(
        f'listen: "127.0.0.1:{port}"\nmax_payload: 8MB\nmax_pending: 64MB\n'
        f'jetstream {{\n  store_dir: "{directory / "js"}"\n  max_file_store: 20GB\n'
        "  limits { max_ack_pending: 100000 }\n}\n"
    )
    process = subprocess.Popen(
        [str(find_nats_server()), "-c", str(config), "-l", str(directory / "server.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    return process, f"nats://127.0.0.1:{port}"


async def wait_listening(url: str, within: float = 20.0) -> None:
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


async def measure(
    count: int,
    payload: bytes,
    *,
    shards: int = 1,
    filtering: str = "wildcard",
    settle: float = SETTLE_S,
) -> list[dict[str, Any]]:
    """Both rounds (first, update) at `count` consumers; one row each. Raises TimeoutError
    when a round's writes or deliveries take longer than `settle` seconds."""
    directory = Path(tempfile.mkdtemp(prefix="fanout-"))
    process, url = start_server(directory)
    rows: list[dict[str, Any]] = []
    try:
        await wait_listening(url)
        writer = await nats.connect(url, name="fanout-writer")
        fanout = Fanout(count, shards, filtering, payload)
        admin = await fanout.setup(url)
        for label in ("first", "update"):
            fanout.received.clear()
            fanout.done.clear()
            ticks = cpu_ticks(process.pid)
            started = time.monotonic()
            writes_s = await fanout.write_all(writer, settle)
            await asyncio.wait_for(fanout.done.wait(), settle)
            seconds = time.monotonic() - started
            latencies = sorted(t - started for t in fanout.received.values())
            rows.append(
                {
                    "clusters": count,
                    "shards": shards,
                    "filter": filtering,
                    "size": len(payload),
                    "round": label,
                    "all_written_s": round(writes_s, 3),
                    "all_delivered_s": round(seconds, 3),
                    "p50_s": round(latencies[len(latencies) // 2], 3),
                    "server_cpu_s": round((cpu_ticks(process.pid) - ticks) / CLOCK_TICKS, 2),
                }
            )
            # Every consumer asks again, as a connector renews a used-up request.
            for index in range(count):
                await fanout._pull(index)
            await asyncio.sleep(1.0)
        for nc in [writer, admin, *fanout.readers]:
            await nc.close()
    finally:
        process.kill()  # its stored state is thrown away with the directory
        process.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.desired_fanout", description=__doc__)
    parser.add_argument("--clusters", default="1000,3000,10000", help="comma-separated sizes")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--filter", choices=FILTERINGS, default="wildcard")
    parser.add_argument("--size", type=int, default=1500, help="bytes per message")
    args = parser.parse_args(argv)
    payload = os.urandom(args.size)
    for count in (int(n) for n in args.clusters.split(",")):
        rows = asyncio.run(measure(count, payload, shards=args.shards, filtering=args.filter))
        for row in rows:
            print(orjson.dumps(row).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
