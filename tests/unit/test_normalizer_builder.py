"""Documents to a Taskset: checks that name the document, namespaces, phases, order."""

from __future__ import annotations

import pytest

from normalizer.builder import build_taskset, taskset_name_from
from normalizer.documents import parse_documents
from normalizer.errors import (
    DuplicateObject,
    EmptySource,
    InvalidObject,
    MisplacedObject,
    UnsupportedSource,
)
from taskset.model import SourceInfo, Taskset
from taskset.ordering import GroupKind

SOURCE = SourceInfo(format="yaml", digest="sha256:test")


def build(text: str, namespace: str = "apps") -> Taskset:
    documents = parse_documents(text, "in.yaml")
    return build_taskset(name="t", namespace=namespace, documents=documents, source=SOURCE).taskset


def refs(taskset: Taskset, phase: str = "install") -> list[str]:
    return [str(step.ref) for step in taskset.phase(phase)]  # type: ignore[arg-type]


CRD_WIDGETS = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: %s
  names: {kind: Widget, plural: widgets}
"""


def test_namespaced_objects_without_a_namespace_get_the_tasksets() -> None:
    taskset = build(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: other}\n"
    )
    assert refs(taskset) == ["ConfigMap/apps/a", "ConfigMap/other/b"]
    assert list(taskset.install[0].object["metadata"]) == ["name", "namespace"]


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("v1", "Namespace"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
        ("storage.k8s.io/v1", "StorageClass"),
        ("v1", "PersistentVolume"),
        ("networking.k8s.io/v1", "IngressClass"),
        ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
        ("apiregistration.k8s.io/v1", "APIService"),
        ("cert-manager.io/v1", "ClusterIssuer"),
    ],
)
def test_cluster_scoped_objects_get_no_namespace(api_version: str, kind: str) -> None:
    name = "v1.example.com" if kind == "APIService" else "x"
    if kind == "CustomResourceDefinition":
        text = CRD_WIDGETS % "Namespaced"
    else:
        text = f"apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: {name}}}\n"
    [step] = build(text).install
    assert "namespace" not in step.object["metadata"]


def test_a_stray_namespace_on_a_cluster_scoped_kind_is_removed() -> None:
    [step] = build(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"
        "metadata: {name: reader, namespace: apps}\n"
    ).install
    assert step.object["metadata"] == {"name": "reader"}


def test_a_custom_resource_takes_its_scope_from_its_crd() -> None:
    cluster_wide = build(
        CRD_WIDGETS % "Cluster" + "---\napiVersion: example.com/v1\nkind: Widget\n"
        "metadata: {name: w}\n"
    )
    namespaced = build(
        CRD_WIDGETS % "Namespaced" + "---\napiVersion: example.com/v1\nkind: Widget\n"
        "metadata: {name: w}\n"
    )
    assert refs(cluster_wide) == ["CustomResourceDefinition/widgets.example.com", "Widget/w"]
    assert refs(namespaced) == ["CustomResourceDefinition/widgets.example.com", "Widget/apps/w"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "kind: ConfigMap\nmetadata: {name: a}\n",
            r"in\.yaml:1: ConfigMap/a: apiVersion is missing",
        ),
        ("apiVersion: v1\nmetadata: {name: a}\n", r"in\.yaml:1: a document: kind is missing"),
        ("apiVersion: v1\nkind: ConfigMap\n", r"in\.yaml:1: a ConfigMap: metadata is missing"),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {labels: {a: b}}\n",
            r"a ConfigMap: metadata\.name is missing",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {generateName: web-}\n",
            r"metadata\.generateName cannot be applied",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: My_Config}\n",
            r"ConfigMap/My_Config: metadata\.name 'My_Config' must be a DNS-1123 subdomain",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: web.internal}\n",
            r"metadata\.name 'web\.internal' must be a DNS-1123 label",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: Apps}\n",
            r"metadata\.namespace 'Apps' must be a DNS-1123 label",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, annotations: {weight: 5}}\n",
            r"metadata\.annotations\['weight'\] must be a string, not int",
        ),
        (
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
            "metadata: {name: widgets}\nspec: {group: example.com, names: "
            "{kind: Widget, plural: widgets}}\n",
            r"metadata\.name must be 'widgets\.example\.com'",
        ),
        (
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\n"
            "apiVersion: v1\nkind: Secret\nmetadata: {name: ''}\n",
            r"in\.yaml:6: a Secret: metadata\.name is missing",
        ),
    ],
)
def test_a_document_that_cannot_be_applied_is_refused_naming_it(text: str, message: str) -> None:
    with pytest.raises(InvalidObject, match=message):
        build(text)


def test_rbac_names_may_hold_colons() -> None:
    [step] = build(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"
        "metadata: {name: 'system:aggregate-to-view'}\n"
    ).install
    assert step.ref.name == "system:aggregate-to-view"


def test_an_object_defined_twice_is_refused_naming_both_places() -> None:
    with pytest.raises(DuplicateObject) as caught:
        build(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: apps}\n"
        )
    assert str(caught.value).startswith(
        "ConfigMap/apps/a is defined more than once: at in.yaml:1 and at in.yaml:5"
    )


def test_the_same_object_in_two_phases_without_hooks_is_a_duplicate() -> None:
    with pytest.raises(DuplicateObject):
        build(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n"
            "apiVersion: v1\nkind: ConfigMap\n"
            "metadata: {name: a, annotations: {fleetbus.io/phase: init}}\n"
        )


def test_a_hook_for_two_events_lands_in_both_phases() -> None:
    taskset = build(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: j\n"
        "  annotations: {helm.sh/hook: 'pre-install,post-install'}\n"
    )
    assert refs(taskset, "init") == refs(taskset, "postInstall") == ["Job/apps/j"]
    assert taskset.install == []


def test_a_custom_resource_before_its_definition_is_refused() -> None:
    with pytest.raises(MisplacedObject, match="Widget/apps/w is in phase init"):
        build(
            CRD_WIDGETS % "Namespaced" + "---\napiVersion: example.com/v1\nkind: Widget\n"
            "metadata: {name: w, annotations: {fleetbus.io/phase: init}}\n"
        )


def test_a_source_with_no_objects_is_refused() -> None:
    with pytest.raises(EmptySource, match="holds no Kubernetes objects"):
        build("# nothing here\n---\n")


def test_a_source_of_only_test_hooks_is_empty_too() -> None:
    with pytest.raises(EmptySource):
        build(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: t\n  annotations: {helm.sh/hook: test}\n"
        )


def test_left_out_objects_are_listed() -> None:
    documents = parse_documents(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: t\n  annotations: {helm.sh/hook: test}\n"
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        "in.yaml",
    )
    built = build_taskset(name="t", namespace="apps", documents=documents, source=SOURCE)
    assert built.left_out == ("in.yaml:1: Pod/t: left out (a helm test hook)",)


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [("web", "web"), ("My_App", "my-app"), ("nginx.conf", "nginx-conf"), ("--x--", "x")],
)
def test_default_names_are_made_valid(candidate: str, expected: str) -> None:
    assert taskset_name_from(candidate, "somewhere") == expected


def test_a_name_that_cannot_be_made_valid_asks_for_one() -> None:
    with pytest.raises(UnsupportedSource, match="pass --name"):
        taskset_name_from("___", "the name of ___")
    assert taskset_name_from("a" * 62 + "-b", "x") == "a" * 62


@pytest.mark.parametrize(
    "given", ["namespace:", "namespace: ''", "namespace: null", "namespace: ~"]
)
def test_an_empty_or_null_namespace_after_the_name_becomes_the_tasksets(given: str) -> None:
    taskset = build(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  {given}\n")
    metadata = taskset.install[0].object["metadata"]
    assert metadata == {"name": "a", "namespace": "apps"}
    assert list(metadata) == ["name", "namespace"]


def test_an_empty_namespace_on_a_cluster_scoped_kind_is_removed() -> None:
    taskset = build("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  namespace: ''\n")
    assert [step.object["metadata"] for _, step in taskset.steps()] == [{"name": "a"}]


def test_a_kind_of_unknown_scope_is_taken_as_namespaced_and_named_in_a_note() -> None:
    documents = parse_documents(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", "w.yaml"
    )
    built = build_taskset(
        name="t",
        namespace="apps",
        documents=documents,
        source=SourceInfo(format="yaml", digest="d"),
    )
    assert built.taskset.install[0].object["metadata"]["namespace"] == "apps"
    assert len(built.notes) == 1
    assert "the scope of Widget.example.com is unknown" in built.notes[0]
    assert "no cluster discovery known" in built.notes[0]
    assert built.notes[0].endswith(": w")


def test_the_clusters_discovery_decides_a_kind_without_a_crd_and_leaves_no_note() -> None:
    documents = parse_documents(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", "w.yaml"
    )
    built = build_taskset(
        name="t",
        namespace="apps",
        documents=documents,
        source=SourceInfo(format="yaml", digest="d"),
        discovered_scopes={GroupKind("example.com", "Widget"): True},
    )
    assert "namespace" not in built.taskset.install[0].object["metadata"]
    assert built.notes == ()


def test_built_in_namespaced_kinds_need_no_note() -> None:
    documents = parse_documents(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n", "d.yaml"
    )
    built = build_taskset(
        name="t",
        namespace="apps",
        documents=documents,
        source=SourceInfo(format="yaml", digest="d"),
    )
    assert built.notes == ()
