"""Listening ports for child servers: outside the kernel's ephemeral range, never handed out twice.

A port from `bind(0)` lies in the ephemeral range, where an outgoing connection opened before the
server starts (a route to another node, a leaf, a client) can take it as its source port, and the
server then fails with "address already in use".
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fleetbus import natsserver
from fleetbus.natsserver import free_port


def _ephemeral() -> range:
    low, high = (int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


def test_ports_lie_outside_the_ephemeral_range_and_are_never_repeated() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    ephemeral = _ephemeral()
    assert not [p for p in ports if p in ephemeral]


def test_a_port_claimed_by_another_process_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(natsserver, "_PORT_CLAIMS", tmp_path)
    only = natsserver._listening_range()
    assert only is not None
    first, second = only[0], only[1]
    monkeypatch.setattr(natsserver, "_listening_range", lambda: range(first, second + 1))
    monkeypatch.setattr(natsserver, "_HANDED_OUT", set())
    (tmp_path / str(first)).touch()  # another process holds `first`
    assert free_port() == second


def test_a_port_something_listens_on_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(natsserver, "_PORT_CLAIMS", tmp_path)
    ports = natsserver._listening_range()
    assert ports is not None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        for port in ports:
            try:
                taken.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        taken.listen()
        held = taken.getsockname()[1]
        monkeypatch.setattr(natsserver, "_listening_range", lambda: range(held, held + 2))
        monkeypatch.setattr(natsserver, "_HANDED_OUT", set())
        assert free_port() == held + 1
