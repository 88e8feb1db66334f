"""The controller's own CRDs: read from `cluster_controller/crds/`, installed or upgraded.

`fleetbus controller` installs them on start with server-side apply (so an upgrade changes
exactly the fields this version defines and leaves others' alone) and waits for each to be
Established before it lists or watches anything of that kind. The same files are the Helm
chart's `crds/` folder.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

import yaml

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


def crd_manifests() -> list[dict[str, Any]]:
    """The CRDs this version of the controller serves, parsed from the package's YAML."""
    folder = resources.files("cluster_controller").joinpath("crds")
    manifests = []
    for name in CRD_FILES:
        document = yaml.safe_load(folder.joinpath(name).read_text(encoding="utf-8"))
        manifests.append(document)
    return manifests


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
