"""A real kube-apiserver (with etcd) for benchmarks: the `kube-envtest` binary from infra/envtest.

Started once per figure in a temporary directory and stopped afterwards; it exits on its own if
this process dies (its standard input closes). It runs `--apiserver-only` (no controller-manager,
scheduler or simulated nodes), so the figures measure fleetbus and not the cluster's own
controllers, and stay comparable with earlier runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BINARY = REPO / ".cache" / "envtest" / "bin" / "kube-envtest"


class EnvtestUnavailable(RuntimeError):
    pass


@contextlib.asynccontextmanager
async def kube_apiserver(ready_timeout: float = 120.0) -> AsyncIterator[Path]:
    """Yields the admin kubeconfig of a fresh kube-apiserver."""
    if not (BINARY.is_file() and os.access(BINARY, os.X_OK)):
        raise EnvtestUnavailable(f"{BINARY} is missing: run `make envtest`")
    with tempfile.TemporaryDirectory(prefix="fleetbus-bench-kube-") as tmp:
        workdir = Path(tmp)
        kubeconfig = workdir / "kubeconfig"
        log = (workdir / "kube-envtest.log").open("wb")
        try:
            process = await asyncio.create_subprocess_exec(
                str(BINARY),
                "--kubeconfig",
                str(kubeconfig),
                "--exit-on-stdin-eof",
                "--apiserver-only",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**os.environ, "TMPDIR": str(workdir)},
            )
        finally:
            log.close()
        assert process.stdout is not None
        try:
            async with asyncio.timeout(ready_timeout):
                while True:
                    line = await process.stdout.readline()
                    if not line:
                        tail = (workdir / "kube-envtest.log").read_text(errors="replace")
                        raise EnvtestUnavailable(f"kube-envtest exited: {tail[-500:]}")
                    if b"ready" in line.split():
                        break
            yield kubeconfig
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), timeout=30)
                except TimeoutError:
                    process.kill()
                    await process.wait()
