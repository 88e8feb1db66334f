"""`make install` and `make run` as a user without root, on a machine without Chromium.

The test copies the working tree into a temporary folder owned by `nobody`, hides every Chromium
the browser script would find behind an empty, non-executable file in a private mount namespace
(`unshare --mount`), drops to `nobody` with `setpriv`, and runs `make install` with the system's
python3, then `make run` until the hub answers and the examples are published. pip installs from
a wheel folder under `.cache/wheels` (built once from the project's own dependencies, keyed by
pyproject.toml) with no index, so the test costs an install from local wheels, not downloads:
15 to 45 s for `make install` on this 2-core machine depending on its load, 20 to 95 s in all,
so it runs with the long tests (`make test-long`).

Creating the namespace and switching users needs root; the test says so and skips elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetbus.natsserver import free_port
from tests.processes import nats_servers_under

REPO = Path(__file__).resolve().parents[2]
WHEELS = REPO / ".cache" / "wheels"
NOBODY = 65534
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def wheelhouse() -> Path:
    """Wheels of every dependency of `.[dev]` (and pip, setuptools, wheel for the build)."""
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = WHEELS / f".built-{key}"
    if not stamp.exists():
        shutil.rmtree(WHEELS, ignore_errors=True)
        WHEELS.mkdir(parents=True)
        pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(WHEELS)]
        subprocess.run([*pip, "pip", "setuptools>=69", "wheel"], check=True)
        subprocess.run([*pip, f"{REPO}[dev]"], check=True)
        for own in WHEELS.glob("fleetbus-*.whl"):
            own.unlink()
        stamp.touch()
    return WHEELS


def copy_tree(target: Path) -> None:
    """The files of the working tree git would commit (tracked or new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = REPO / os.fsdecode(name)
        if not source.is_file():
            continue
        destination = target / os.fsdecode(name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)


pytestmark = pytest.mark.long


def browsers_on_path() -> list[str]:
    found = {shutil.which(name, path=SYSTEM_PATH) for name in BROWSERS}
    return sorted({os.path.realpath(p) for p in found if p} | {p for p in found if p})


def as_nobody(hide: list[str], empty: Path, *command: str) -> list[str]:
    """`command` as `nobody`, in a mount namespace where each file of `hide` is `empty`."""
    mounts = "".join(f'mount --bind "{empty}" "{path}" && ' for path in hide)
    script = f'{mounts}exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *command]


def user_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        "HOME": str(home),
        "PATH": SYSTEM_PATH,
        "LANG": "C.UTF-8",
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(WHEELS),
        "PIP_CACHE_DIR": str(home / "pip-cache"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        **extra,
    }


def chown_tree(root: Path) -> None:
    os.chown(root, NOBODY, NOBODY)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), NOBODY, NOBODY, follow_symlinks=False)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def unprivileged_tree() -> Iterator[tuple[Path, Path, Path]]:
    if os.geteuid() != 0:
        pytest.skip("creating a mount namespace and switching to `nobody` needs root")
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        pytest.skip("util-linux's unshare and setpriv are needed")
    wheelhouse()
    # A folder of its own under /tmp: every folder above it is one `nobody` may enter.
    root = Path(tempfile.mkdtemp(prefix="fleetbus-unprivileged-"))
    try:
        source = root / "fleetbus"
        home = root / "home"
        home.mkdir()
        copy_tree(source)
        empty = root / "no-browser"
        empty.write_bytes(b"")
        os.chmod(root, 0o755)
        chown_tree(root)
        os.chmod(empty, 0o644)
        yield source, home, empty
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_make_install_and_make_run_work_for_a_user_without_root_or_chromium(
    unprivileged_tree: tuple[Path, Path, Path],
) -> None:
    source, home, empty = unprivileged_tree
    hide = browsers_on_path()
    env = user_env(home)

    # Proof that the browser is out of reach for this user: the browser script says so.
    browser = subprocess.run(
        as_nobody(hide, empty, "scripts/install-browser.sh"),
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert browser.returncode == 1, browser.stdout + browser.stderr
    assert "no Chromium found" in browser.stderr
    assert "apt-get install -y chromium" in browser.stderr

    started = time.monotonic()
    install = subprocess.run(
        as_nobody(hide, empty, "make", "install", "PYTHON=/usr/bin/python3"),
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    install_seconds = time.monotonic() - started
    assert install.returncode == 0, install.stdout + install.stderr
    assert "chromium" not in (install.stdout + install.stderr).lower()
    venv_python = source / ".venv" / "bin" / "python"
    assert venv_python.exists()
    assert os.stat(source / ".venv").st_uid == NOBODY
    print(f"make install as nobody from local wheels: {install_seconds:.1f} s")

    http_port = free_port()
    run_env = user_env(
        home,
        FLEETBUS_HTTP=f"127.0.0.1:{http_port}",
        FLEETBUS_NATS_PORT=str(free_port()),
        FLEETBUS_LEAF_PORT=str(free_port()),
    )
    log = source.parent / "make-run.log"
    with log.open("w") as out:
        run = subprocess.Popen(
            as_nobody(hide, empty, "make", "run", "PYTHON=/usr/bin/python3"),
            cwd=source,
            env=run_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while "fleetbus is running" not in log.read_text():
            assert run.poll() is None, f"make run exited {run.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"make run never came up:\n{log.read_text()}"
            time.sleep(0.5)
        assert answers(f"http://127.0.0.1:{http_port}/healthz")
        data_dir = source / ".fleetbus"
        assert os.stat(data_dir / "admin.token").st_uid == NOBODY
        status = subprocess.run(
            as_nobody(hide, empty, ".venv/bin/fleetbus", "status", "-o", "json"),
            cwd=source,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert '"web"' in status.stdout
    finally:
        os.killpg(run.pid, signal.SIGINT)
        try:
            run.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    # make passes Ctrl-C on by dying of SIGINT itself, once the hub has stopped.
    assert run.returncode in (0, -signal.SIGINT), log.read_text()
    assert nats_servers_under(source) == [], "the hub's nats-server outlived make run"
    assert not answers(f"http://127.0.0.1:{http_port}/healthz")
