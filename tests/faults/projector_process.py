"""The projector in a process of its own, for the fault suites: `python -m
tests.faults.projector_process --urls U --password P --db FILE`.

It runs the projector service exactly as the hub does (its own connection, the same
`ProjectorService`, the same database file), so a test can kill -9 the projector alone and
start it again on the same file.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from events.store import EventStore, connect
from events.streams import REPORTS_STREAM
from projector.service import ProjectorService


async def run(urls: list[str], credentials: Path, db: Path) -> None:
    nc = await connect(urls, name="fault-projector", credentials=credentials)
    store = EventStore(nc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await ProjectorService(store, EventStore(nc, stream=REPORTS_STREAM), db).run(stop)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="projector_process")
    parser.add_argument("--urls", required=True)
    parser.add_argument("--creds", type=Path, required=True)
    parser.add_argument("--db", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(run(args.urls.split(","), args.creds, args.db))
    sys.exit(0)


if __name__ == "__main__":
    main()
