"""The controller's own CRDs: read from `cluster_controller/crds/`, installed or upgraded.

`fleetbus controller` installs them on start with server-side apply (so an upgrade changes
exactly the fields this version defines and leaves others' alone) and waits for each to be
Established before it lists or watches anything of that kind. The same files are the Helm
chart's `crds/` folder.

The controller reads them from `crds/compiled.json`, the same manifests as JSON (written by
`python -m cluster_controller.crds`; a unit test fails when it differs from the YAML): the
edge process then needs no YAML parser at all (PyYAML costs about 4 MiB resident there).
"""

from __future__ import annotations

import asyncio
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from cluster_controller.errors import ControllerError, CrdInstallFailed
from cluster_controller.kstatus import condition
from cluster_controller.kube import Kube
from kube_contract.model import FIELD_MANAGER
from kube_contract.resources import CRD

CRD_FILES = (
    "fleetnamespaces.fleetbus.io.yaml",
    "steps.fleetbus.io.yaml",
    "tasklets.fleetbus.io.yaml",
    "tasks.fleetbus.io.yaml",
)
COMPILED = "compiled.json"


def crd_manifests() -> list[dict[str, Any]]:
    """The CRDs this version of the controller serves, in `CRD_FILES` order."""
    compiled = resources.files("cluster_controller").joinpath("crds", COMPILED)
    manifests: list[dict[str, Any]] = json.loads(compiled.read_text(encoding="utf-8"))
    return manifests


def crd_manifests_from_yaml() -> list[dict[str, Any]]:
    """The CRDs parsed from their YAML sources (what `compiled.json` must hold)."""
    import yaml  # only to compile and to check: the controller reads the JSON

    folder = resources.files("cluster_controller").joinpath("crds")
    return [yaml.safe_load(folder.joinpath(name).read_text(encoding="utf-8")) for name in CRD_FILES]


def write_compiled(folder: Path) -> Path:
    """Write `COMPILED` from the YAML sources into `folder` (the package's `crds/`)."""
    target = folder / COMPILED
    target.write_text(json.dumps(crd_manifests_from_yaml(), indent=1, sort_keys=True) + "\n")
    return target


async def install_crds(kube: Kube, *, wait_seconds: float = 60.0, poll: float = 0.2) -> list[str]:
    """Apply every CRD and wait until all are Established; the names installed."""
    names = []
    try:
        for manifest in crd_manifests():
            await kube.apply(manifest, field_manager=FIELD_MANAGER, force=True, info=CRD)
            names.append(str(manifest["metadata"]["name"]))
    except ControllerError as e:
        raise CrdInstallFailed(f"cannot install the fleetbus CRDs: {e}") from e
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    pending = list(names)
    while pending:
        still = []
        for name in pending:
            crd = await kube.get(CRD, name)
            established = condition(crd, "Established") if crd is not None else None
            if established is None or established.get("status") != "True":
                still.append(name)
        pending = still
        if not pending:
            break
        if loop.time() > deadline:
            raise CrdInstallFailed(
                f"CRDs not Established after {wait_seconds:.0f}s: {', '.join(pending)}"
            )
        await asyncio.sleep(poll)
    return names


if __name__ == "__main__":
    print(write_compiled(Path(__file__).resolve().parent / "crds"), file=sys.stderr)
