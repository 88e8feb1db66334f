"""Finding this machine's processes by command line, for tests that check what outlives what."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path


def command_lines() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, argv) of every process that can be read right now."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0]:
            yield int(entry.name), cmdline


def pids_where(matches: Callable[[int, list[bytes]], bool]) -> list[int]:
    return sorted(pid for pid, cmdline in command_lines() if matches(pid, cmdline))


def nats_servers_under(directory: Path) -> list[int]:
    """Pids of nats-server processes whose config or store lives under `directory`."""
    needle = str(directory).encode()
    return pids_where(
        lambda _, cmdline: cmdline[0].endswith(b"nats-server") and needle in b" ".join(cmdline)
    )
