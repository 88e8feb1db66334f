"""`python -m bench.raw_responders`: the raw NATS baseline's subscribers, in their own process.

N connections, each subscribed to `bench.raw.<i>` and answering "applied" to whatever it is
sent: what a fleet would cost if delivery were nothing but core NATS publish and reply. They
share one process, as the simulated clusters of `fleetbus up --sim-clusters` do. Prints
`ready` once every subscription is in place, and runs until its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

SUBJECT_PREFIX = "bench.raw"


async def serve(url: str, user: str, password: str, count: int) -> None:
    clients: list[Client] = []

    async def connect_one(index: int) -> None:
        nc = await nats.connect(
            url, user=user, password=password, name=f"raw-{index}", max_reconnect_attempts=3
        )

        async def answer(msg: Msg) -> None:
            await nc.publish(msg.reply, b"applied")

        await nc.subscribe(f"{SUBJECT_PREFIX}.{index}", cb=answer)
        await nc.flush()
        clients.append(nc)

    for start in range(0, count, 100):
        await asyncio.gather(*(connect_one(i) for i in range(start, min(count, start + 100))))
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for nc in clients:
        await nc.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_responders")
    parser.add_argument("--url", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-stdin", action="store_true", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    password = sys.stdin.readline().strip()
    asyncio.run(serve(args.url, args.user, password, args.count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
