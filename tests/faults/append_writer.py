"""A writer process for the fault suites: appends commands until each one is acknowledged.

Run as `python -m tests.faults.append_writer`. It behaves like a hub service under failure: a
command that gets no answer is retried with the same event ids (so the log stores it once)
until it is acknowledged, and every acknowledgement is written to `--acks` at once, one line per
event (`<event id> <stream sequence>`), so a test knows exactly what the log promised even if
this process dies a moment later.

The commands are seeded: each writer owns a few cluster aggregates and appends, in a random
mix, conditional single events, unconditional single events and atomic batches of 2 to 5
events. A `ConcurrencyConflict` can only mean a retry was stored twice or lost, so it is fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from events.catalog import ClusterLabelsChanged, ClusterRegistered, Event
from events.errors import ConcurrencyConflict, EventLogUnavailable
from events.ids import new_event_id
from events.store import AppendResult, EventStore, connect

RETRY_PAUSE_S = 0.2
"""Pause between attempts while the log is unreachable (a backoff, not a wait for a state)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="append_writer")
    parser.add_argument("--urls", required=True, help="comma-separated NATS URLs")
    parser.add_argument("--creds", required=True, help="`.creds` file of user `hub`")
    parser.add_argument("--writer", type=int, required=True)
    parser.add_argument("--count", type=int, required=True, help="events to append")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--acks", required=True, help="file to append acknowledgements to")
    parser.add_argument("--deadline", type=float, default=240.0, help="seconds before giving up")
    parser.add_argument("--timeout", type=float, default=2.0, help="per-request timeout")
    return parser.parse_args(argv)


def plan_command(
    rng: random.Random, writer: int, versions: dict[str, int], remaining: int, step: int
) -> tuple[list[Event], int | None]:
    """The next command: its events and the expected version (None = unconditional)."""
    now = datetime.now(UTC)
    cluster = f"w{writer}-c{rng.randrange(8)}"
    if cluster not in versions:
        registered = ClusterRegistered(
            id=new_event_id(), occurred_at=now, actor="fault-writer", cluster=cluster
        )
        return [registered], 0
    roll = rng.random()
    size = 1 if roll < 0.75 else min(remaining, rng.randint(2, 5))
    events: list[Event] = [
        ClusterLabelsChanged(
            id=new_event_id(),
            occurred_at=now,
            actor="fault-writer",
            cluster=cluster,
            labels={"writer": str(writer), "step": str(step + offset)},
        )
        for offset in range(size)
    ]
    expected = None if roll < 0.25 else versions[cluster]
    return events, expected


async def append_until_acknowledged(
    store: EventStore, events: list[Event], expected: int | None, deadline: float
) -> tuple[AppendResult, int]:
    """Append, retrying the very same events until the log answers; returns (result, attempts)."""
    attempts = 0
    while True:
        attempts += 1
        try:
            return await store.append(events, expected=expected), attempts
        except EventLogUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(RETRY_PAUSE_S)


async def run(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.deadline
    rng = random.Random(f"{args.seed}/{args.writer}")
    nc = await connect(
        args.urls.split(","), name=f"fault-writer-{args.writer}", credentials=Path(args.creds)
    )
    store = EventStore(nc, timeout=args.timeout, attempts=2)
    acks = os.open(args.acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    versions: dict[str, int] = {}
    written = 0
    retried = 0
    try:
        while written < args.count:
            events, expected = plan_command(
                rng, args.writer, versions, args.count - written, written
            )
            result, attempts = await append_until_acknowledged(store, events, expected, deadline)
            retried += attempts > 1
            lines = "".join(
                f"{event.id} {seq}\n" for event, seq in zip(events, result.sequences, strict=True)
            )
            os.write(acks, lines.encode())
            versions[events[0].subject.rsplit(".", 1)[-1]] = result.sequences[-1]
            written += len(events)
    except ConcurrencyConflict as e:
        print(f"writer {args.writer}: a retried command conflicted: {e}", file=sys.stderr)
        return 3
    except EventLogUnavailable as e:
        print(f"writer {args.writer}: gave up at the deadline: {e}", file=sys.stderr)
        return 4
    finally:
        os.close(acks)
        await store.close()
    print(f"writer {args.writer}: {written} events, {retried} commands retried", flush=True)
    return 0


def main() -> None:
    sys.exit(asyncio.run(run(parse_args(sys.argv[1:]))))


if __name__ == "__main__":
    main()
