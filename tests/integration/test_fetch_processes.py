"""A fetch's child processes never outlive it: the time limit and `cancel` kill the child's
whole process group (what git starts: ssh, git-remote-http), and a cancelled fetch starts
nothing more."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from sources.errors import SourceTimedOut
from sources.processes import FetchDeadline


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def grandchild_pid(pidfile: Path) -> int:
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the child started no grandchild"
        time.sleep(0.01)
    return int(pidfile.read_text())


def gone(pid: int) -> bool:
    """Whether `pid` has died, allowing the moment SIGKILL takes to land on a loaded machine
    (the group is killed at once; each process dies when the kernel next runs it)."""
    deadline = time.monotonic() + 10
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_time_limit_kills_the_child_and_what_it_started(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    deadline = FetchDeadline(1.0)
    started = time.monotonic()
    with pytest.raises(SourceTimedOut, match=r"asking the server took longer than 1s"):
        deadline.run(
            ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], what="asking the server"
        )
    # Far below the child's 300 s, however slow a loaded machine is to start and kill it.
    assert time.monotonic() - started < 60
    assert gone(grandchild_pid(pidfile)), "the grandchild was killed with its group"


def test_cancel_kills_the_running_child_and_refuses_the_next(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    deadline = FetchDeadline(600)
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            deadline.run(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], what="fetching x")
        except SourceTimedOut as e:
            errors.append(e)

    worker = threading.Thread(target=fetch)
    worker.start()
    grandchild = grandchild_pid(pidfile)
    deadline.cancel()
    worker.join(10)
    assert not worker.is_alive()
    assert [str(e) for e in errors] == ["fetching x was cancelled"]
    assert gone(grandchild)
    with pytest.raises(SourceTimedOut, match="then y was cancelled"):
        deadline.run(["true"], what="then y")


def test_a_child_that_ends_leaves_nothing_in_its_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    done = FetchDeadline(60).run(
        ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo ok"], what="listing refs"
    )
    assert (done.returncode, done.stdout) == (0, b"ok\n")
    assert gone(grandchild_pid(pidfile)), "a process left behind by the child is killed"
    assert os.getpgrp() != 0
