"""`python -m bench.raw_responders`: the raw baselines' receivers, in their own process.

N connections, in one process as the simulated clusters of `fleetbus up --sim-clusters` are:

- `--mode core` (the core NATS floor): each subscribed to `bench.raw.<i>` and answering
  "applied" to whatever it is sent: what a fleet would cost if delivery were nothing but core
  NATS publish and reply, with nothing persisted.
- `--mode jetstream` (the JetStream floor): each reading its own durable pull consumer of the
  `BENCHRAW` stream, filtered on `bench.js.<i>`; every message is fetched, acknowledged, and
  then announced with a core publish on `bench.jsdone.<i>`: what a design that persists each
  cluster's desired state and delivers it through one consumer per cluster cannot beat.

Prints `ready` once every subscription or consumer is in place, and runs until its standard
input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

SUBJECT_PREFIX = "bench.raw"
JS_STREAM = "BENCHRAW"
JS_SUBJECT_PREFIX = "bench.js"
JS_DONE_PREFIX = "bench.jsdone"
FETCH_WAIT_S = 30.0


def jetstream_stream_config() -> dict[str, object]:
    """The floor's stream: configured as DESIRED is (file storage, one replica, last message
    per subject, s2 compression), so the comparison is of delivery, not of storage."""
    return {
        "name": JS_STREAM,
        "subjects": [f"{JS_SUBJECT_PREFIX}.*"],
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "num_replicas": 1,
        "max_msgs_per_subject": 1,
        "compression": "s2",
    }


async def serve(url: str, credentials: str, count: int) -> None:
    clients: list[Client] = []

    async def connect_one(index: int) -> None:
        nc = await nats.connect(
            url, user_credentials=credentials, name=f"raw-{index}", max_reconnect_attempts=3
        )

        async def answer(msg: Msg) -> None:
            await nc.publish(msg.reply, b"applied")

        await nc.subscribe(f"{SUBJECT_PREFIX}.{index}", cb=answer)
        await nc.flush()
        clients.append(nc)

    for start in range(0, count, 100):
        await asyncio.gather(*(connect_one(i) for i in range(start, min(count, start + 100))))
    await until_stdin_closes()
    for nc in clients:
        await nc.close()


async def until_stdin_closes() -> None:
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def serve_jetstream(url: str, credentials: str, count: int) -> None:
    """One durable pull consumer per receiver, each message fetched, acked, then announced."""
    clients: list[Client] = []
    readers: list[asyncio.Task[None]] = []

    async def connect_one(index: int) -> None:
        nc = await nats.connect(
            url,
            user_credentials=credentials,
            name=f"raw-js-{index}",
            max_reconnect_attempts=3,
        )
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            f"{JS_SUBJECT_PREFIX}.{index}",
            durable=f"raw-{index}",
            stream=JS_STREAM,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW, ack_wait=30.0),
        )

        async def read() -> None:
            while True:
                try:
                    msgs = await sub.fetch(1, timeout=FETCH_WAIT_S)
                except nats.errors.TimeoutError:
                    continue
                for msg in msgs:
                    await msg.ack()
                    await nc.publish(f"{JS_DONE_PREFIX}.{index}", b"applied")

        clients.append(nc)
        readers.append(asyncio.create_task(read()))

    for start in range(0, count, 100):
        await asyncio.gather(*(connect_one(i) for i in range(start, min(count, start + 100))))
    await until_stdin_closes()
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for nc in clients:
        await nc.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_responders")
    parser.add_argument("--url", required=True)
    parser.add_argument("--creds", required=True, help="`.creds` file of the hub's user")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--mode", choices=("core", "jetstream"), default="core")
    args = parser.parse_args()
    serving = serve if args.mode == "core" else serve_jetstream
    asyncio.run(serving(args.url, args.creds, args.count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
