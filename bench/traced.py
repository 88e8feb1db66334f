"""`python -m bench.traced SNAPSHOT fleetbus-args…`: fleetbus's CLI with tracemalloc on.

For finding what holds a hub process's memory: the process runs as `fleetbus` would, tracing
every allocation with one frame (the line that made it), and writes a tracemalloc snapshot to
SNAPSHOT whenever it receives SIGUSR2. Tracing costs time and memory of its own, so resident
sizes are measured on untraced processes; this says which lines hold what.
"""

from __future__ import annotations

import runpy
import signal
import sys
import tracemalloc
from types import FrameType


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m bench.traced SNAPSHOT fleetbus-args…")
    target = sys.argv[1]
    tracemalloc.start(1)

    def dump(signum: int, frame: FrameType | None) -> None:
        tracemalloc.take_snapshot().dump(target)

    signal.signal(signal.SIGUSR2, dump)
    sys.argv = ["fleetbus", *sys.argv[2:]]
    runpy.run_module("fleetbus.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
