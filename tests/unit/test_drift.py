"""Drift scenarios: the cheap check, its confirmation, ignore paths, and what gets recorded."""

from __future__ import annotations

from typing import Any

from cluster_controller.drift import (
    confirmed_fields,
    decide_step_drift,
    lost_ownership,
    manager_fields,
    projection_diff,
    proven_fields,
    record_correction,
    respect_ignored,
    suspect_fields,
)
from kube_contract.drift import is_ignored
from kube_contract.model import DriftStatus

MANAGER = "fleetbus-controller"


def desired() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "app", "labels": {"app": "web"}},
        "spec": {
            "replicas": 3,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx:1.27",
                            "resources": {"limits": {"cpu": "0.5"}},
                        }
                    ]
                }
            },
        },
    }


def live() -> dict[str, Any]:
    """The Deployment as the apiserver returns it: defaults, status, managedFields added."""
    obj = desired()
    obj["metadata"].update(
        {
            "uid": "u1",
            "resourceVersion": "42",
            "generation": 1,
            "annotations": {"deployment.kubernetes.io/revision": "1"},
            "managedFields": [
                {
                    "manager": MANAGER,
                    "operation": "Apply",
                    "fieldsV1": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {
                            "f:replicas": {},
                            "f:template": {"f:spec": {"f:containers": {}}},
                        },
                    },
                },
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "subresource": "status",
                    "fieldsV1": {"f:status": {}},
                },
            ],
        }
    )
    container = obj["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicy"] = "IfNotPresent"
    container["resources"]["limits"]["cpu"] = "500m"
    obj["spec"]["strategy"] = {"type": "RollingUpdate"}
    obj["status"] = {"replicas": 3}
    return obj


def test_defaults_status_and_other_managers_fields_are_not_drift() -> None:
    diff = projection_diff(desired(), live())

    assert diff == ["/spec/template/spec/containers/0/resources/limits/cpu"]


def test_the_cheap_check_may_raise_a_false_alarm_that_the_dry_run_clears() -> None:
    current = live()
    suspects = suspect_fields(desired(), current, manager=MANAGER, ignore_paths=[])
    would_be = live()

    assert suspects == ["/spec/template/spec/containers/0/resources/limits/cpu"]
    assert confirmed_fields(desired(), would_be, current, ignore_paths=[]) == []


def test_an_edited_image_is_confirmed_as_drift() -> None:
    edited = live()
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:evil"
    would_be = live()

    assert "/spec/template/spec/containers/0/image" in suspect_fields(
        desired(), edited, manager=MANAGER, ignore_paths=[]
    )
    assert confirmed_fields(desired(), would_be, edited, ignore_paths=[]) == [
        "/spec/template/spec/containers/0/image"
    ]


def test_an_ignored_path_is_neither_suspected_nor_confirmed() -> None:
    scaled = live()
    scaled["spec"]["replicas"] = 7
    would_be = live()

    assert suspect_fields(desired(), scaled, manager=MANAGER, ignore_paths=["/spec/replicas"]) == [
        "/spec/template/spec/containers/0/resources/limits/cpu"
    ]
    assert confirmed_fields(desired(), would_be, scaled, ignore_paths=["/spec/replicas"]) == []


def test_a_removed_label_is_drift() -> None:
    unlabelled = live()
    del unlabelled["metadata"]["labels"]["app"]

    assert projection_diff(desired(), unlabelled) == [
        "/metadata/labels/app",
        "/spec/template/spec/containers/0/resources/limits/cpu",
    ]


def test_losing_ownership_of_a_field_makes_the_object_a_suspect() -> None:
    taken = live()
    fields = taken["metadata"]["managedFields"][0]["fieldsV1"]
    del fields["f:spec"]["f:replicas"]

    owned = manager_fields(taken, MANAGER)

    assert owned is not None
    assert lost_ownership(desired(), owned) == ["/spec/replicas"]


def test_a_value_changed_by_another_manager_is_proven_drift_without_a_dry_run() -> None:
    scaled = live()
    scaled["spec"]["replicas"] = 7
    del scaled["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:replicas"]
    scaled["metadata"]["managedFields"].append(
        {
            "manager": "kubectl-edit",
            "operation": "Update",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        }
    )

    assert proven_fields(desired(), scaled, manager=MANAGER, ignore_paths=[]) == ["/spec/replicas"]
    assert proven_fields(desired(), scaled, manager=MANAGER, ignore_paths=["/spec/replicas"]) == []


def test_a_normalised_value_or_a_field_lost_with_our_value_proves_nothing() -> None:
    # cpu 0.5 shows as 500m, still ours: only the dry-run can clear it.
    assert proven_fields(desired(), live(), manager=MANAGER, ignore_paths=[]) == []
    # Someone took the replicas field, with our value: not drift.
    taken = live()
    del taken["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:replicas"]
    assert proven_fields(desired(), taken, manager=MANAGER, ignore_paths=[]) == []
    # A value changed while we still own it (someone wrote under our manager's name): dry-run.
    edited = live()
    edited["spec"]["replicas"] = 7
    assert proven_fields(desired(), edited, manager=MANAGER, ignore_paths=[]) == []


def test_a_manager_that_never_applied_owns_nothing() -> None:
    assert manager_fields(live(), "somebody-else") is None


def test_an_extra_list_item_from_another_manager_is_cleared_by_the_dry_run() -> None:
    with_sidecar = live()
    with_sidecar["spec"]["template"]["spec"]["containers"].append({"name": "mesh", "image": "m"})
    would_be = live()
    would_be["spec"]["template"]["spec"]["containers"].append({"name": "mesh", "image": "m"})

    assert "/spec/template/spec/containers" in projection_diff(desired(), with_sidecar)
    assert confirmed_fields(desired(), would_be, with_sidecar, ignore_paths=[]) == []


def test_ignore_patterns_match_segments_prefixes_and_wildcards() -> None:
    assert is_ignored("/spec/replicas", ["/spec/replicas"])
    assert is_ignored("/spec/template/spec/containers/0/image", ["/spec/template"])
    assert is_ignored(
        "/spec/template/spec/containers/3/image", ["/spec/template/spec/containers/*/image"]
    )
    assert not is_ignored("/spec/replicasets", ["/spec/replicas"])
    assert not is_ignored("/spec", ["/spec/replicas"])


def test_a_correction_keeps_the_live_value_at_ignored_paths() -> None:
    scaled = live()
    scaled["spec"]["replicas"] = 7

    manifest = respect_ignored(desired(), scaled, ["/spec/replicas"])

    assert manifest["spec"]["replicas"] == 7
    assert desired()["spec"]["replicas"] == 3


def test_an_ignored_path_absent_from_the_live_object_is_left_out_of_the_manifest() -> None:
    without = live()
    del without["spec"]["replicas"]

    manifest = respect_ignored(desired(), without, ["/spec/replicas"])

    assert "replicas" not in manifest["spec"]


def test_a_new_object_gets_the_manifest_as_written() -> None:
    assert respect_ignored(desired(), None, ["/spec/replicas"]) == desired()


def test_one_drift_seen_many_times_with_policy_report_counts_once() -> None:
    first = decide_step_drift(
        DriftStatus(), fields=["/data/a"], deleted=False, policy="report", now="t1"
    )
    again = decide_step_drift(
        first.status, fields=["/data/a"], deleted=False, policy="report", now="t2"
    )

    assert first.detected
    assert not first.correct
    assert first.status.detected == 1
    assert first.status.state == "Drifted"
    assert not again.detected
    assert again.status.detected == 1


def test_a_reported_drift_that_someone_reverts_is_in_sync_again() -> None:
    drifted = decide_step_drift(
        DriftStatus(), fields=["/data/a"], deleted=False, policy="report", now="t1"
    )
    reverted = decide_step_drift(
        drifted.status, fields=[], deleted=False, policy="report", now="t2"
    )

    assert reverted.status.state == "InSync"
    assert reverted.status.detected == 1


def test_with_policy_correct_every_observation_is_corrected_and_counted() -> None:
    decision = decide_step_drift(DriftStatus(), fields=[], deleted=True, policy="correct", now="t1")
    corrected = record_correction(decision.status, "t2")

    assert decision.detected
    assert decision.correct
    assert decision.status.deleted
    assert corrected.state == "Corrected"
    assert (corrected.detected, corrected.corrected) == (1, 1)
    assert corrected.last_corrected_at == "t2"


def test_policy_ignore_records_nothing() -> None:
    decision = decide_step_drift(
        DriftStatus(), fields=["/x"], deleted=False, policy="ignore", now="t1"
    )

    assert not decision.detected
    assert not decision.correct
    assert decision.status == DriftStatus()
