"""Install order inside a phase: Helm's kind order, hooks by weight, CRs after their CRDs."""

from __future__ import annotations

from typing import Any

import pytest

from taskset.model import HookInfo, Step, Taskset
from taskset.ordering import (
    INSTALL_ORDER,
    UNLISTED_RANK,
    install_rank,
    misplaced_objects,
    order_phase,
    order_taskset,
    removal_order,
)

API_VERSIONS = {
    "Namespace": "v1",
    "ServiceAccount": "v1",
    "Secret": "v1",
    "ConfigMap": "v1",
    "PersistentVolumeClaim": "v1",
    "Service": "v1",
    "Pod": "v1",
    "CustomResourceDefinition": "apiextensions.k8s.io/v1",
    "ClusterRole": "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "Ingress": "networking.k8s.io/v1",
    "PriorityClass": "scheduling.k8s.io/v1",
    "Widget": "example.com/v1",
    "Gadget": "example.com/v1",
}


def obj(kind: str, name: str, namespace: str = "", api_version: str = "") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": api_version or API_VERSIONS.get(kind, "example.org/v1"),
        "kind": kind,
        "metadata": metadata,
    }


def crd(kind: str, group: str = "example.com", plural: str = "") -> dict[str, Any]:
    plural = plural or kind.lower() + "s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "names": {"kind": kind, "plural": plural}, "scope": "Namespaced"},
    }


def step(manifest: dict[str, Any], hook: HookInfo | None = None) -> Step:
    return Step(object=manifest, hook=hook)


def hook(weight: int = 0, *events: str) -> HookInfo:
    return HookInfo(events=list(events) or ["pre-install"], weight=weight)


def names(steps: list[Step]) -> list[str]:
    return [str(s.ref) for s in steps]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(
            [
                obj("Deployment", "web", "app"),
                obj("Service", "web", "app"),
                obj("Namespace", "app"),
                obj("ConfigMap", "conf", "app"),
                obj("ServiceAccount", "web", "app"),
            ],
            [
                "Namespace/app",
                "ServiceAccount/app/web",
                "ConfigMap/app/conf",
                "Service/app/web",
                "Deployment/app/web",
            ],
            id="namespace-first-then-config-then-service-then-workload",
        ),
        pytest.param(
            [
                obj("ClusterRoleBinding", "b"),
                obj("CustomResourceDefinition", "widgets.example.com"),
                obj("Namespace", "app"),
                obj("ClusterRole", "r"),
            ],
            [
                "Namespace/app",
                "CustomResourceDefinition/widgets.example.com",
                "ClusterRole/r",
                "ClusterRoleBinding/b",
            ],
            id="crds-right-after-namespaces-before-cluster-rbac",
        ),
        pytest.param(
            [
                obj("Ingress", "web", "app"),
                obj("CronJob", "nightly", "app"),
                obj("Job", "migrate", "app"),
                obj("StatefulSet", "db", "app"),
                obj("PersistentVolumeClaim", "data", "app"),
                obj("Secret", "creds", "app"),
            ],
            [
                "Secret/app/creds",
                "PersistentVolumeClaim/app/data",
                "StatefulSet/app/db",
                "Job/app/migrate",
                "CronJob/app/nightly",
                "Ingress/app/web",
            ],
            id="secrets-storage-workloads-jobs-ingress",
        ),
        pytest.param(
            [obj("Zebra", "z", "app"), obj("Apple", "a", "app"), obj("Deployment", "d", "app")],
            ["Deployment/app/d", "Apple/app/a", "Zebra/app/z"],
            id="unlisted-kinds-last-by-kind",
        ),
        pytest.param(
            [
                obj("ConfigMap", "b", "two"),
                obj("ConfigMap", "a", "two"),
                obj("ConfigMap", "z", "one"),
            ],
            ["ConfigMap/one/z", "ConfigMap/two/a", "ConfigMap/two/b"],
            id="ties-by-namespace-then-name",
        ),
        pytest.param(
            [obj("PriorityClass", "high"), obj("Namespace", "app")],
            ["PriorityClass/high", "Namespace/app"],
            id="priority-classes-before-namespaces-like-helm",
        ),
    ],
)
def test_a_phase_is_ordered_by_kind_then_namespace_then_name(
    given: list[dict[str, Any]], expected: list[str]
) -> None:
    assert names(order_phase(step(m) for m in given)) == expected
    assert names(order_phase(step(m) for m in reversed(given))) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(
            [
                (obj("Job", "late", "app"), hook(5)),
                (obj("Job", "early", "app"), hook(-5)),
                (obj("Job", "middle", "app"), hook(0)),
            ],
            ["Job/app/early", "Job/app/middle", "Job/app/late"],
            id="by-weight-ascending",
        ),
        pytest.param(
            [
                (obj("Job", "a", "app"), hook(1)),
                (obj("ConfigMap", "z", "app"), hook(1)),
                (obj("ServiceAccount", "y", "app"), hook(1)),
            ],
            ["ServiceAccount/app/y", "ConfigMap/app/z", "Job/app/a"],
            id="equal-weights-by-kind",
        ),
        pytest.param(
            [
                (obj("Job", "hook", "app"), hook(-100)),
                (crd("Widget"), None),
            ],
            ["CustomResourceDefinition/widgets.example.com", "Job/app/hook"],
            id="objects-without-hooks-before-every-hook",
        ),
        pytest.param(
            [
                (obj("Job", "after", "app"), hook(-10, "post-delete")),
                (obj("Job", "before", "app"), hook(10, "pre-delete")),
            ],
            ["Job/app/before", "Job/app/after"],
            id="post-delete-after-every-pre-delete",
        ),
    ],
)
def test_hooks_are_ordered_by_stage_then_weight_then_kind(
    given: list[tuple[dict[str, Any], HookInfo | None]], expected: list[str]
) -> None:
    steps = [step(m, h) for m, h in given]
    assert names(order_phase(steps)) == expected
    assert names(order_phase(reversed(steps))) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(
            [(obj("Widget", "w", "app"), None), (crd("Widget"), None)],
            ["CustomResourceDefinition/widgets.example.com", "Widget/app/w"],
            id="same-weight",
        ),
        pytest.param(
            [(obj("Widget", "w", "app"), hook(-5)), (crd("Widget"), hook(5))],
            ["CustomResourceDefinition/widgets.example.com", "Widget/app/w"],
            id="cr-with-a-lower-weight-still-follows",
        ),
        pytest.param(
            [
                (obj("Widget", "w", "app"), None),
                (obj("Zebra", "z", "app"), None),
                (obj("Gadget", "g", "app"), None),
                (crd("Widget"), None),
            ],
            [
                "CustomResourceDefinition/widgets.example.com",
                "Gadget/app/g",
                "Widget/app/w",
                "Zebra/app/z",
            ],
            id="among-other-unlisted-kinds",
        ),
        pytest.param(
            [(obj("Service", "s", "app", "example.com/v1"), None), (crd("Service"), None)],
            ["CustomResourceDefinition/services.example.com", "Service/app/s"],
            id="a-custom-kind-named-like-a-builtin",
        ),
    ],
)
def test_a_custom_resource_always_follows_its_definition(
    given: list[tuple[dict[str, Any], HookInfo | None]], expected: list[str]
) -> None:
    steps = [step(m, h) for m, h in given]
    assert names(order_phase(steps)) == expected
    assert names(order_phase(reversed(steps))) == expected


def test_a_builtin_kind_named_like_a_custom_kind_is_not_held_back() -> None:
    steps = [
        step(obj("Service", "s", "app")),
        step(crd("Service")),
        step(obj("Deployment", "d", "app")),
    ]
    assert names(order_phase(steps)) == [
        "CustomResourceDefinition/services.example.com",
        "Service/app/s",
        "Deployment/app/d",
    ]


def test_every_listed_kind_ranks_before_unlisted_kinds() -> None:
    assert [install_rank(kind) for kind in INSTALL_ORDER] == list(range(len(INSTALL_ORDER)))
    assert install_rank("Widget") == UNLISTED_RANK > install_rank("ValidatingWebhookConfiguration")


def test_removal_runs_the_install_order_backwards() -> None:
    ordered = order_phase([step(obj("Deployment", "d", "a")), step(obj("Namespace", "a"))])
    assert names(removal_order(ordered)) == ["Deployment/a/d", "Namespace/a"]


def test_ordering_a_taskset_orders_every_phase() -> None:
    taskset = Taskset(
        name="t",
        init=[step(obj("Job", "j", "a"), hook(2)), step(obj("Job", "i", "a"), hook(1))],
        install=[step(obj("Deployment", "d", "a")), step(obj("Namespace", "a"))],
        post_install=[
            step(obj("Job", "b", "a"), hook(0, "post-install")),
            step(obj("Job", "a", "a"), hook(0, "post-install")),
        ],
        pre_delete=[
            step(obj("Pod", "p", "a"), hook(1, "pre-delete")),
            step(obj("Job", "x", "a"), hook(0, "pre-delete")),
        ],
    )
    ordered = order_taskset(taskset)
    assert names(ordered.init) == ["Job/a/i", "Job/a/j"]
    assert names(ordered.install) == ["Namespace/a", "Deployment/a/d"]
    assert names(ordered.post_install) == ["Job/a/a", "Job/a/b"]
    assert names(ordered.pre_delete) == ["Job/a/x", "Pod/a/p"]


def test_a_custom_resource_in_an_earlier_phase_than_its_crd_is_found() -> None:
    taskset = Taskset(
        name="t",
        init=[step(obj("Widget", "early", "a"), hook(0))],
        install=[step(crd("Widget")), step(obj("Widget", "fine", "a"))],
        pre_delete=[step(obj("Widget", "also-fine", "a"), hook(0, "pre-delete"))],
    )
    found = misplaced_objects(taskset)
    assert [(str(m.resource), m.phase, m.prerequisite_phase) for m in found] == [
        ("Widget/a/early", "init", "install")
    ]
    assert "Widget/a/early is in phase init" in str(found[0])


def test_an_object_never_runs_before_the_namespace_it_lives_in() -> None:
    steps = [
        step(obj("Job", "early", "app"), hook(-10)),
        step(obj("Namespace", "app"), hook(5)),
        step(obj("Job", "elsewhere", "other"), hook(-10)),
    ]
    assert names(order_phase(steps)) == ["Job/other/elsewhere", "Namespace/app", "Job/app/early"]


def test_an_object_in_an_earlier_phase_than_its_namespace_is_found() -> None:
    taskset = Taskset(
        name="t",
        init=[step(obj("Job", "migrate", "app"), hook(0))],
        install=[step(obj("Namespace", "app")), step(obj("ConfigMap", "c", "app"))],
    )
    [found] = misplaced_objects(taskset)
    assert str(found) == (
        "Job/app/migrate is in phase init, but its namespace Namespace/app "
        "is only created in the later phase install"
    )
