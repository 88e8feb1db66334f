"""`fleetbus projector rebuild|digest`: rebuild the read models from the log, or fingerprint them.

`rebuild` replays EVENTS and REPORTS from sequence 1 into a fresh database and swaps it in;
a running hub's projector notices and continues from the rebuilt positions. `--out FILE`
builds elsewhere and leaves the live database alone. `digest` prints a hash per table, so two
projections at the same positions can be compared.

Unlike the commands that go through the hub's API, these are admin tools of the hub's own
machine: `rebuild` reads the log with the hub's NATS credentials and writes the projection file,
both from the hub's data dir (`--data-dir`); `digest` reads the projection file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from events.streams import REPORTS_STREAM
from fleetbus.datadir import DEFAULT_DATA_DIR
from fleetbus.local import open_local_store
from projector.db import ProjectionDb
from projector.service import PROJECTION_FILE, rebuild_projection


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "projector",
        help="rebuild or fingerprint the read models (on the hub's machine: needs its data dir)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="D",
        help="the hub's data dir (NATS credentials, projection file; default ./.fleetbus)",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    rebuild = verbs.add_parser("rebuild", parents=[common], help="replay the log from seq 1")
    rebuild.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="build into FILE instead of replacing the hub's projection",
    )
    rebuild.set_defaults(handler=handle_rebuild)
    digest = verbs.add_parser("digest", parents=[common], help="hash every table")
    digest.add_argument(
        "--db",
        type=Path,
        default=None,
        metavar="FILE",
        help="the read models file (default: projector.db in the data dir)",
    )
    digest.set_defaults(handler=handle_digest)


async def handle_rebuild(args: argparse.Namespace) -> int:
    store = await open_local_store(args.data_dir)
    try:
        reports = store.on_stream(REPORTS_STREAM)
        if args.out is not None:
            built = await rebuild_projection(store, reports, args.out, replace=False)
            built.replace(args.out)
            built = args.out
        else:
            built = await rebuild_projection(store, reports, args.data_dir / PROJECTION_FILE)
    finally:
        await store.close()
    db = await ProjectionDb.open_readonly(built)
    try:
        positions = await db.positions()
    finally:
        await db.close()
    where = ", ".join(f"{stream} at {seq}" for stream, seq in sorted(positions.items()))
    print(f"projection rebuilt into {built} ({where or 'empty log'})")
    return 0


async def handle_digest(args: argparse.Namespace) -> int:
    db = await ProjectionDb.open_readonly(args.db or args.data_dir / PROJECTION_FILE)
    try:
        document = {"positions": await db.positions(), "tables": await db.table_digests()}
    finally:
        await db.close()
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    return 0
