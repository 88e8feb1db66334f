"""`python -m bench.edge_wakeups`: what wakes an idle edge, counted, for comparing two trees.

Idle CPU of a few tenths of a percent is hard to compare between two versions of the code on a
shared machine: the share moves with the machine's load more than with the code. What wakes
the processes does not. This runs the whole edge as P5 does (`fleetbus edge --kubeconfig`
against kube-envtest, with a hub and its scheduler), applies a few small tasksets, lets it
settle, then traces both processes of the edge (the fleetbus process and its leaf
nats-server) with `strace -f -tt` over a window and reports, per process, the calls by name
and the network calls by file descriptor, with each process's CPU share over the same window.

To compare with another tree, run it from that tree's checkout (`cd OTHER &&
PYTHONPATH=OTHER python -m bench.edge_wakeups`): the edge, the hub and the harness then all
run that tree's code. Run it under the machine's benchmark lock like any other timing.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.procstat import CLOCK_TICKS, children_of, cpu_ticks

TRACED_CALLS = "network,poll,epoll_wait,epoll_pwait,select,futex,read,write"
NETWORK_CALLS = frozenset(
    {"sendto", "recvfrom", "sendmsg", "recvmsg", "read", "write", "connect", "accept4"}
)
_CALL = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+\d\d:\d\d:\d\d\.\d+\s+(\w+)\((\d*)")
_RESUMED = re.compile(r"<\.\.\. (\w+) resumed>")


@dataclass
class Wakeups:
    """The calls of one traced process over a window, by name and, for reads and writes on
    descriptors, by (name, descriptor)."""

    calls: Counter[str] = field(default_factory=Counter)
    on_descriptor: Counter[tuple[str, int]] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def count_calls(trace: str) -> Wakeups:
    """Count the calls of an `strace -f -tt` output (one call a line; a call split by
    another thread's, `<unfinished ...>` then `<... NAME resumed>`, counts once)."""
    found = Wakeups()
    for line in trace.splitlines():
        if _RESUMED.search(line):
            continue
        match = _CALL.match(line)
        if match is None:
            continue
        name, descriptor = match.group(2), match.group(3)
        found.calls[name] += 1
        if name in NETWORK_CALLS and descriptor:
            found.on_descriptor[(name, int(descriptor))] += 1
    return found


def describe(what: str, wakeups: Wakeups, window: float, cpu_pct: float) -> list[str]:
    """Report lines for one process."""
    lines = [
        f"{what}: {wakeups.total} calls in {window:.0f} s "
        f"({wakeups.total / window:.1f}/s), CPU {cpu_pct:.2f} % of a core"
    ]
    lines += [f"  {name}: {count}" for name, count in wakeups.calls.most_common()]
    lines += [
        f"  {name} on fd {descriptor}: {count}"
        for (name, descriptor), count in sorted(wakeups.on_descriptor.items())
    ]
    return lines


async def _trace(pid: int, out: Path, window: float) -> tuple[str, float]:
    """strace `pid` (all its threads) for `window` seconds: its output and its CPU share."""
    tracer = await asyncio.create_subprocess_exec(
        *("strace", "-f", "-tt", "-e", f"trace={TRACED_CALLS}", "-o", str(out), "-p", str(pid)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        before, started = cpu_ticks(pid), time.monotonic()
        await asyncio.sleep(window)
        used = cpu_ticks(pid) - before
        elapsed = time.monotonic() - started
    finally:
        tracer.terminate()
        await asyncio.wait_for(tracer.wait(), timeout=10)
    text = await asyncio.to_thread(out.read_text, errors="replace")
    return text, 100.0 * used / CLOCK_TICKS / elapsed


async def measure(tasksets: int, window: float) -> list[str]:
    from bench.envtest import kube_apiserver
    from bench.single_edge import single_edge, small_taskset

    async with kube_apiserver() as kubeconfig, single_edge(kubeconfig) as edge:
        if tasksets:
            sources = [small_taskset(f"app-{i:03d}") for i in range(tasksets)]
            await edge.publish_all(sources, within=600.0)
        await asyncio.sleep(10.0)
        pid = edge.edge.pid
        leaves = children_of(pid)
        if len(leaves) != 1:
            raise RuntimeError(f"the edge process has {len(leaves)} children, expected its leaf")
        with tempfile.TemporaryDirectory(prefix="fleetbus-wakeups-") as scratch:
            (process, process_cpu), (leaf, leaf_cpu) = await asyncio.gather(
                _trace(pid, Path(scratch) / "edge.trace", window),
                _trace(leaves[0], Path(scratch) / "leaf.trace", window),
            )
    return [
        *describe("fleetbus edge process", count_calls(process), window, process_cpu),
        *describe("leaf nats-server", count_calls(leaf), window, leaf_cpu),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge_wakeups", description=__doc__)
    parser.add_argument("--tasksets", type=int, default=20, help="small tasksets applied first")
    parser.add_argument("--window", type=float, default=30.0, help="seconds traced")
    args = parser.parse_args(argv)
    if args.tasksets < 0 or args.window <= 0:
        print(
            f"edge_wakeups: --tasksets must be 0 or more (got {args.tasksets}) and --window "
            f"above 0 seconds (got {args.window:g})",
            file=sys.stderr,
        )
        return 2
    if shutil.which("strace") is None:
        print("edge_wakeups: strace is not installed (apt-get install strace)", file=sys.stderr)
        return 2
    for line in asyncio.run(measure(args.tasksets, args.window)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
