"""`bench.edge_wakeups` counts what an idle edge's processes do, from strace's output."""

from __future__ import annotations

import pytest

from bench.edge_wakeups import count_calls, describe, main

TRACE = """\
24181 01:17:22.443345 epoll_wait(3, [], 18, 0) = 0
24181 01:17:22.443666 sendto(21, "GET /leafz HTTP/1.1\\r\\nHost: 127.0"..., 40, 0, NULL, 0) = 40
24181 01:17:22.445450 epoll_wait(3, [{events=EPOLLIN, data={u32=21, u64=1}}], 18, 248) = 1
24181 01:17:22.446031 recvfrom(21, "HTTP/1.1 200 OK\\r\\n"..., 262144, 0, NULL, NULL) = 635
24203 01:17:22.500000 futex(0x7f, FUTEX_WAIT_PRIVATE, 0, NULL <unfinished ...>
24181 01:17:23.024766 recvfrom(7, "HMSG _INBOX.x 1 134\\r\\n"..., 262144, 0, NULL, NULL) = 134
24203 01:17:23.100000 <... futex resumed>) = 0
24181 01:17:23.200000 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED} ---
24181 01:17:23.456642 sendto(21, "GET /leafz HTTP/1.1\\r\\nHost: 127.0"..., 40, 0, NULL, 0) = 40
"""


def test_calls_are_counted_by_name_and_network_calls_by_descriptor() -> None:
    found = count_calls(TRACE)
    assert found.calls == {"epoll_wait": 2, "sendto": 2, "recvfrom": 2, "futex": 1}
    assert found.total == 7
    assert found.on_descriptor == {("sendto", 21): 2, ("recvfrom", 21): 1, ("recvfrom", 7): 1}


def test_a_call_split_by_another_threads_counts_once() -> None:
    split = (
        "7 10:00:00.000001 futex(0x1, FUTEX_WAIT_PRIVATE, 0, NULL <unfinished ...>\n"
        "8 10:00:00.000002 epoll_pwait(4, [], 128, 0, NULL, 0) = 0\n"
        "7 10:00:00.000003 <... futex resumed>) = 0\n"
    )
    assert count_calls(split).calls == {"futex": 1, "epoll_pwait": 1}


def test_the_report_gives_the_rate_and_the_cpu_share() -> None:
    lines = describe("leaf nats-server", count_calls(TRACE), 2.0, 0.456)
    assert lines[0] == "leaf nats-server: 7 calls in 2 s (3.5/s), CPU 0.46 % of a core"
    assert "  sendto on fd 21: 2" in lines


def test_a_window_that_is_not_positive_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--window", "0"]) == 2
    assert "--window above 0 seconds (got 0)" in capsys.readouterr().err
