"""Which phase an object goes to: `fleetbus.io/phase`, and Helm hooks mapped onto phases."""

from __future__ import annotations

from typing import Any

import pytest

from normalizer.errors import InvalidHook, UnknownPhase
from normalizer.phases import classify, wait_policy
from taskset.model import HookInfo


def annotated(**annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j", "annotations": annotations},
    }


def placements(manifest: dict[str, Any]) -> list[tuple[str, HookInfo | None]]:
    classified = classify(manifest, where="f.yaml:1", what="Job/j")
    return [(p.phase, p.hook) for p in classified.placements]


def test_an_object_without_annotations_is_installed() -> None:
    assert placements({"kind": "ConfigMap", "metadata": {"name": "c"}}) == [("install", None)]


@pytest.mark.parametrize("phase", ["init", "install", "postInstall", "preDelete"])
def test_the_phase_annotation_moves_an_object(phase: str) -> None:
    assert placements(annotated(**{"fleetbus.io/phase": phase})) == [(phase, None)]


def test_an_unknown_phase_is_refused_naming_the_object_and_the_phases() -> None:
    with pytest.raises(UnknownPhase) as caught:
        placements(annotated(**{"fleetbus.io/phase": "postinstall"}))
    message = str(caught.value)
    assert message.startswith("f.yaml:1: Job/j: unknown phase 'postinstall'")
    assert "init, install, postInstall, preDelete" in message


@pytest.mark.parametrize(
    ("hook", "expected"),
    [
        ("pre-install", [("init", ["pre-install"])]),
        ("pre-upgrade", [("init", ["pre-upgrade"])]),
        ("pre-install,pre-upgrade", [("init", ["pre-install", "pre-upgrade"])]),
        ("post-install", [("postInstall", ["post-install"])]),
        ("post-upgrade", [("postInstall", ["post-upgrade"])]),
        ("pre-delete", [("preDelete", ["pre-delete"])]),
        ("post-delete", [("preDelete", ["post-delete"])]),
        (
            "pre-install, post-install",
            [("init", ["pre-install"]), ("postInstall", ["post-install"])],
        ),
        ("test", []),
        ("test-success", []),
        ("pre-rollback", []),
        ("post-rollback,test", []),
        ("pre-install,pre-rollback", [("init", ["pre-install"])]),
    ],
)
def test_helm_hooks_map_onto_phases(hook: str, expected: list[tuple[str, list[str]]]) -> None:
    found = placements(annotated(**{"helm.sh/hook": hook}))
    assert [(phase, info.events if info else None) for phase, info in found] == expected


def test_hooks_left_out_say_why() -> None:
    classified = classify(annotated(**{"helm.sh/hook": "test"}), where="w", what="Job/j")
    assert classified.placements == ()
    assert "test" in classified.left_out


def test_hook_weight_and_delete_policy_are_kept() -> None:
    manifest = annotated(
        **{
            "helm.sh/hook": "pre-install",
            "helm.sh/hook-weight": "-5",
            "helm.sh/hook-delete-policy": "hook-succeeded,before-hook-creation",
        }
    )
    [(_, info)] = placements(manifest)
    assert info == HookInfo(
        events=["pre-install"],
        weight=-5,
        delete_policy=["hook-succeeded", "before-hook-creation"],
    )


def test_a_hook_without_a_delete_policy_gets_helms_default() -> None:
    [(_, info)] = placements(annotated(**{"helm.sh/hook": "post-install"}))
    assert info is not None
    assert info.delete_policy == ["before-hook-creation"]
    assert info.weight == 0


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"helm.sh/hook": "pre-install", "helm.sh/hook-weight": "heavy"}, "must be an integer"),
        (
            {"helm.sh/hook": "pre-install", "helm.sh/hook-delete-policy": "sometimes"},
            "unknown helm.sh/hook-delete-policy 'sometimes'",
        ),
    ],
)
def test_nonsense_hook_annotations_are_refused(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidHook, match=message):
        placements(annotated(**annotations))


@pytest.mark.parametrize("hook", ["crd-install", "pre-instal", "pre-install,crd-install", " , "])
def test_an_object_with_a_hook_helm_does_not_know_is_left_out_with_the_reason(hook: str) -> None:
    classified = classify(annotated(**{"helm.sh/hook": hook}), where="w", what="Job/j")
    assert classified.placements == ()
    assert "unknown Helm hook" in classified.left_out
    assert "skipped as Helm skips it" in classified.left_out


def test_hook_names_are_read_case_insensitively_like_helm() -> None:
    classified = classify(annotated(**{"helm.sh/hook": " Pre-Install "}), where="w", what="Job/j")
    assert [placement.phase for placement in classified.placements] == ["init"]


def test_a_hook_and_a_phase_annotation_together_are_refused() -> None:
    with pytest.raises(UnknownPhase, match="keep one of them"):
        placements(annotated(**{"helm.sh/hook": "pre-install", "fleetbus.io/phase": "init"}))


@pytest.mark.parametrize(
    ("kind", "api_version", "phase", "expected"),
    [
        ("Job", "batch/v1", "install", "complete"),
        ("Job", "batch/v1", "init", "complete"),
        ("Pod", "v1", "init", "complete"),
        ("Pod", "v1", "install", "ready"),
        ("Deployment", "apps/v1", "install", "ready"),
        ("Job", "example.com/v1", "install", "ready"),
    ],
)
def test_jobs_and_hook_pods_wait_for_completion(
    kind: str, api_version: str, phase: str, expected: str
) -> None:
    manifest = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}
    assert wait_policy(manifest, phase) == expected  # type: ignore[arg-type]
