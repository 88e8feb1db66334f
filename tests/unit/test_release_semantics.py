"""Pure decisions of release semantics: hooks by revision and weight, capabilities, contexts."""

from __future__ import annotations

import pytest

from cluster_controller.hooks import is_post_delete, next_release, runs_now, settle_release
from cluster_controller.plan import StepState, plan_phase
from edge_connector.decisions import CAPABILITIES_RESEND_EVERY, send_capabilities
from edge_connector.kube_executor import resources_from_discovery
from kube_contract.model import ReleaseStatus
from taskset.capabilities import ApiResource, capabilities_of, render_context
from taskset.model import HookInfo, ObjectRef

PRE = HookInfo(events=["pre-install"])
UPGRADE = HookInfo(events=["pre-upgrade"])
BOTH = HookInfo(events=["pre-install", "pre-upgrade"])


@pytest.mark.parametrize(
    ("hook", "upgrade", "runs"),
    [
        (None, False, True),
        (None, True, True),
        (PRE, False, True),
        (PRE, True, False),
        (UPGRADE, False, False),
        (UPGRADE, True, True),
        (BOTH, False, True),
        (BOTH, True, True),
    ],
)
def test_init_hooks_run_by_install_or_upgrade(
    hook: HookInfo | None, upgrade: bool, runs: bool
) -> None:
    assert runs_now(hook, "init", upgrade=upgrade) is runs


def test_delete_hooks_always_run_on_removal_and_post_delete_is_told_apart() -> None:
    assert runs_now(HookInfo(events=["pre-delete"]), "preDelete", upgrade=True)
    assert is_post_delete(HookInfo(events=["post-delete"]))
    assert not is_post_delete(HookInfo(events=["pre-delete", "post-delete"]))


def test_a_release_is_an_install_until_one_revision_was_ready() -> None:
    first = next_release(ReleaseStatus(), "d1", ready_digest="")
    assert (first.revision, first.upgrade) == (1, False)
    failed_again = next_release(first, "d2", ready_digest="")
    assert (failed_again.revision, failed_again.upgrade) == (2, False)
    deployed = settle_release(first, ready=True)
    assert deployed.deployed == 1
    second = next_release(deployed, "d2", ready_digest="d1")
    assert (second.revision, second.upgrade) == (2, True)
    assert next_release(second, "d2", ready_digest="") == second


def test_a_task_ready_before_releases_were_kept_counts_as_deployed() -> None:
    legacy = next_release(ReleaseStatus(), "d2", ready_digest="d1")
    assert (legacy.revision, legacy.upgrade, legacy.deployed) == (2, True, 1)
    same = next_release(ReleaseStatus(), "d1", ready_digest="d1")
    assert (same.revision, same.upgrade) == (1, False)


def job(name: str, weight: int | None) -> StepState:
    return StepState(
        name=name,
        ref=ObjectRef(api_version="batch/v1", kind="Job", name=name),
        digest="x",
        order=(0, 0) if weight is None else (1, weight),
    )


def test_hooks_go_by_weight_one_weight_after_another_after_the_plain_objects() -> None:
    steps = [job("late", 5), job("early", -5), job("plain", None), job("middle", 0)]
    assert plan_phase(steps).apply == ["plain"]
    done = [
        StepState(name=s.name, ref=s.ref, digest="x", completed_digest="x", order=s.order)
        if s.name == "plain"
        else s
        for s in steps
    ]
    assert plan_phase(done).apply == ["early"]


DISCOVERY = {
    "kind": "APIGroupDiscoveryList",
    "items": [
        {
            "metadata": {"name": "apps"},
            "versions": [
                {
                    "version": "v1",
                    "resources": [
                        {
                            "resource": "deployments",
                            "responseKind": {"kind": "Deployment"},
                            "scope": "Namespaced",
                            "subresources": [{"subresource": "scale"}],
                        }
                    ],
                }
            ],
        },
        {
            "metadata": {},
            "versions": [
                {
                    "version": "v1",
                    "resources": [{"responseKind": {"kind": "Namespace"}, "scope": "Cluster"}],
                }
            ],
        },
    ],
}


def test_aggregated_discovery_becomes_kinds_with_their_scope() -> None:
    found = resources_from_discovery(DISCOVERY)
    assert found == [
        ApiResource(group_version="apps/v1", kind="Deployment", namespaced=True),
        ApiResource(group_version="v1", kind="Namespace", namespaced=False),
    ]
    assert resources_from_discovery({"kind": "APIGroupList", "groups": []}) == []
    caps = capabilities_of("v1.31.2", [*found, *found])
    assert caps.api_versions() == ["apps/v1", "apps/v1/Deployment", "v1", "v1/Namespace"]


def test_full_capabilities_go_out_when_changed_and_now_and_then() -> None:
    assert send_capabilities("d1", "", 0)
    assert not send_capabilities("d1", "d1", 3)
    assert send_capabilities("d2", "d1", 0)
    assert send_capabilities("d1", "d1", CAPABILITIES_RESEND_EVERY)
    assert not send_capabilities("", "", 50)


def test_a_render_context_holds_only_what_the_chart_consults() -> None:
    caps = capabilities_of(
        "v1.31.2", [ApiResource(group_version="v1", kind="Pod", namespaced=True)]
    )
    assert render_context([], caps, is_upgrade=True, revision=3) is None
    assert render_context(["capabilities"], None, is_upgrade=True, revision=3) is None
    only_caps = render_context(["capabilities"], caps, is_upgrade=True, revision=3)
    assert only_caps is not None
    assert only_caps.kube_version == "v1.31.2"
    assert only_caps.revision is None
    release = render_context(["release"], caps, is_upgrade=True, revision=3)
    assert release is not None
    assert (release.kube_version, release.is_upgrade, release.revision) == ("", True, 3)
