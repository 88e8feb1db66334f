"""The scheduler and projector inside `fleetbus up`, driven by the CLI as a user would.

A real Helm chart from `examples/` is published; a values override (re-rendered with the real
Helm engine from the chart archive kept on the hub) and a patch override customise it for one
cluster; status, state and preview show the result; a projection rebuild keeps the answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.test_hub_process import Hub, hub
from tests.eventually import wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

__all__ = ["hub"]


def status_rows(hub: Hub) -> list[dict[str, Any]]:
    done = hub.fleetbus("status", "web", "-o", "json")
    if done.returncode != 0:
        return []
    rows: list[dict[str, Any]] = json.loads(done.stdout)["status"]
    return rows


def test_overrides_status_state_and_rebuild_through_the_cli(hub: Hub) -> None:
    hub.start()
    assert hub.fleetbus("cluster", "register", "edge-1", "--label", "env=prod").returncode == 0
    assert hub.fleetbus("cluster", "register", "edge-2", "--label", "env=dev").returncode == 0
    published = hub.fleetbus(
        "publish", str(EXAMPLES / "helm" / "web"), "--name", "web", "--selector", "env"
    )
    assert published.returncode == 0, published.stderr
    wait_until(lambda: status_rows(hub), "both clusters scheduled", lambda rows: len(rows) == 2)

    values = hub.fleetbus(
        "override",
        "set",
        "web",
        "--name",
        "prod",
        "--selector",
        "env=prod",
        "--values",
        str(EXAMPLES / "overrides" / "web-prod-values.yaml"),
    )
    assert values.returncode == 0, values.stderr
    patch = hub.fleetbus(
        "override",
        "set",
        "web",
        "--name",
        "canary",
        "--cluster",
        "edge-1",
        "--patch",
        str(EXAMPLES / "overrides" / "web-canary-patch.yaml"),
    )
    assert patch.returncode == 0, patch.stderr
    ghost = hub.fleetbus(
        "override",
        "set",
        "web",
        "--name",
        "ghost",
        "--cluster",
        "edge-9",
        "--patch",
        str(EXAMPLES / "overrides" / "web-canary-patch.yaml"),
    )
    assert ghost.returncode == 2
    assert "edge-9" in ghost.stderr

    rows = wait_until(
        lambda: status_rows(hub),
        "edge-1 customised",
        lambda rows: any(
            r["cluster"] == "edge-1" and r["overrides"] == ["prod", "canary"] for r in rows
        ),
    )
    by_cluster = {row["cluster"]: row for row in rows}
    assert by_cluster["edge-1"]["desired_generation"] == 3
    assert by_cluster["edge-1"]["state"] == "pending"
    assert by_cluster["edge-2"]["desired_generation"] == 1
    assert by_cluster["edge-2"]["overrides"] == []

    preview = hub.fleetbus("override", "preview", "web", "--cluster", "edge-1")
    assert preview.returncode == 0, preview.stderr
    assert "+  replicas: 4" in preview.stdout
    assert "nginx:1.27-alpine" in preview.stdout
    assert "overrides: prod, canary" in preview.stderr

    state = hub.fleetbus("state", "--cluster", "edge-1", "-o", "json")
    assert state.returncode == 0, state.stderr
    (task,) = json.loads(state.stdout)["tasks"]
    assert task["verified"] is True
    assert task["clusterTask"]["generation"] == 3
    assert task["clusterTask"]["digest"] == by_cluster["edge-1"]["desired_digest"]

    before = hub.fleetbus("projector", "digest").stdout
    rebuilt = hub.fleetbus("projector", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    after = hub.fleetbus("projector", "digest").stdout
    assert json.loads(after)["tables"] == json.loads(before)["tables"]
    assert status_rows(hub) == rows
    assert hub.interrupt() == 0
