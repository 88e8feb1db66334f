"""Overrides: RFC 7386 and RFC 6902 by the book, precedence, values re-rendering, preview."""

from __future__ import annotations

from typing import Any

import pytest

from taskset.capabilities import RenderContext
from taskset.model import SourceInfo, Step, Taskset
from taskset.overrides import (
    ObjectPatch,
    Override,
    OverrideError,
    PatchFailed,
    PatchTarget,
    RefusedOverride,
    Snapshot,
    apply_json_patch,
    apply_patches,
    customize,
    merge_patch,
    merge_values,
    missing_targets,
    overrides_for,
    parse_patches,
    preview_diff,
)


def deployment(name: str = "web", replicas: int = 1, namespace: str = "") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app"}]}}},
    }


def make_taskset(*objects: dict[str, Any], namespace: str = "apps") -> Taskset:
    return Taskset(
        name="web",
        namespace=namespace,
        install=[Step(object=obj) for obj in objects],
    )


# RFC 7386 appendix A, every example.
@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_follows_every_example_of_rfc_7386(
    target: Any, patch: Any, result: Any
) -> None:
    assert merge_patch(target, patch) == result


# RFC 6902 appendix A (a selection covering every operation and error).
@pytest.mark.parametrize(
    ("doc", "ops", "result"),
    [
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux"}],
            {"baz": "qux", "foo": "bar"},
        ),
        (
            {"foo": ["bar", "baz"]},
            [{"op": "add", "path": "/foo/1", "value": "qux"}],
            {"foo": ["bar", "qux", "baz"]},
        ),
        ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
        (
            {"foo": ["bar", "qux", "baz"]},
            [{"op": "remove", "path": "/foo/1"}],
            {"foo": ["bar", "baz"]},
        ),
        (
            {"baz": "qux", "foo": "bar"},
            [{"op": "replace", "path": "/baz", "value": "boo"}],
            {"baz": "boo", "foo": "bar"},
        ),
        (
            {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
            [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
            {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
        ),
        (
            {"foo": ["all", "grass", "cows", "eat"]},
            [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
            {"foo": ["all", "cows", "eat", "grass"]},
        ),
        (
            {"baz": "qux", "foo": ["a", 2, "c"]},
            [
                {"op": "test", "path": "/baz", "value": "qux"},
                {"op": "test", "path": "/foo/1", "value": 2},
            ],
            {"baz": "qux", "foo": ["a", 2, "c"]},
        ),
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
            {"foo": "bar", "child": {"grandchild": {}}},
        ),
        (
            {"foo": ["bar"]},
            [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
            {"foo": ["bar", ["abc", "def"]]},
        ),
        ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),
        (
            {"a": {"b": 1}},
            [{"op": "copy", "from": "/a", "path": "/c"}],
            {"a": {"b": 1}, "c": {"b": 1}},
        ),
        ({"a": 1}, [{"op": "replace", "path": "", "value": [1]}], [1]),
    ],
)
def test_json_patch_follows_rfc_6902(doc: Any, ops: list[dict[str, Any]], result: Any) -> None:
    assert apply_json_patch(doc, ops) == result


@pytest.mark.parametrize(
    ("doc", "ops", "message"),
    [
        ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], "test failed"),
        ({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}], "does not exist"),
        ({"foo": [1]}, [{"op": "add", "path": "/foo/5", "value": 2}], "out of range"),
        ({"foo": [1]}, [{"op": "remove", "path": "/foo/01"}], "not an array index"),
        ({"foo": 1}, [{"op": "remove", "path": "/bar"}], "does not exist"),
        ({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a/b/c"}], "own child"),
        ({"a": 1}, [{"op": "replace", "path": "/b", "value": 2}], "does not exist"),
    ],
)
def test_a_json_patch_that_cannot_apply_says_which_operation_failed(
    doc: Any, ops: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(PatchFailed, match=message) as info:
        apply_json_patch(doc, ops)
    assert "operation 1" in str(info.value)


def test_a_failing_json_patch_leaves_its_input_untouched() -> None:
    doc = {"a": [1, 2]}
    with pytest.raises(PatchFailed):
        apply_json_patch(doc, [{"op": "remove", "path": "/a/0"}, {"op": "remove", "path": "/x"}])
    assert doc == {"a": [1, 2]}


def test_patch_files_are_read_in_both_forms_and_mistakes_are_named() -> None:
    patches = parse_patches(
        [
            {"target": {"kind": "Deployment", "name": "web"}, "mergePatch": {"spec": {}}},
            {
                "target": {"kind": "Service", "namespace": "apps", "name": "web"},
                "jsonPatch": [{"op": "remove", "path": "/spec/type"}],
            },
        ]
    )
    assert [str(p.target) for p in patches] == ["Deployment/web", "Service/apps/web"]
    assert parse_patches(patches[0].to_wire()) == (patches[0],)
    with pytest.raises(OverrideError, match="patch 1: give exactly one"):
        parse_patches({"target": {"kind": "A", "name": "b"}})
    with pytest.raises(OverrideError, match="needs `kind` and `name`"):
        parse_patches({"target": {"kind": "A"}, "mergePatch": {}})
    with pytest.raises(OverrideError, match="operation 1: `add` needs a `value`"):
        parse_patches(
            {"target": {"kind": "A", "name": "b"}, "jsonPatch": [{"op": "add", "path": "/x"}]}
        )
    with pytest.raises(OverrideError, match="unknown field"):
        parse_patches({"target": {"kind": "A", "name": "b"}, "mergePatch": {}, "extra": 1})


def test_patches_reach_the_named_object_in_the_default_namespace() -> None:
    taskset = make_taskset(deployment("web"), deployment("api", namespace="other"))
    patch = ObjectPatch(
        target=PatchTarget(kind="Deployment", namespace="apps", name="web"),
        merge_patch={"spec": {"replicas": 5}},
    )
    patched = apply_patches(taskset, [patch])
    assert patched.install[0].object["spec"]["replicas"] == 5
    assert patched.install[1] == taskset.install[1]
    assert taskset.install[0].object["spec"]["replicas"] == 1


def test_a_patch_naming_an_absent_object_is_refused_naming_it() -> None:
    taskset = make_taskset(deployment("web"))
    ghost = ObjectPatch(target=PatchTarget(kind="Deployment", name="ghost"), merge_patch={})
    assert [str(t) for t in missing_targets(taskset, [ghost])] == ["Deployment/ghost"]
    with pytest.raises(OverrideError, match="no object Deployment/ghost in taskset web"):
        apply_patches(taskset, [ghost])


def test_a_patch_may_not_rename_the_object_it_targets() -> None:
    taskset = make_taskset(deployment("web"))
    rename = ObjectPatch(
        target=PatchTarget(kind="Deployment", name="web"),
        merge_patch={"metadata": {"name": "other"}},
    )
    with pytest.raises(PatchFailed, match="would rename it"):
        apply_patches(taskset, [rename])


def replicas(name: str, count: int, *, cluster: str = "", selector: str = "") -> Override:
    return Override(
        taskset="web",
        name=name,
        cluster=cluster,
        selector=selector,
        patches=(
            ObjectPatch(
                target=PatchTarget(kind="Deployment", name="web"),
                merge_patch={"spec": {"replicas": count}},
            ),
        ),
    )


def test_cluster_overrides_win_over_selector_overrides_and_names_order_each_group() -> None:
    overrides = [
        replicas("zz-cluster", 9, cluster="edge-1"),
        replicas("b-selector", 3, selector="env=prod"),
        replicas("a-cluster", 7, cluster="edge-1"),
        replicas("a-selector", 2, selector="env=prod"),
        replicas("other", 4, cluster="edge-2"),
        replicas("staging", 5, selector="env=staging"),
    ]
    chosen = overrides_for("edge-1", {"env": "prod"}, overrides)
    assert [o.name for o in chosen] == ["a-selector", "b-selector", "a-cluster", "zz-cluster"]
    result = customize(Snapshot(taskset=make_taskset(deployment("web"))), chosen, None)
    assert result.install[0].object["spec"]["replicas"] == 9
    only_selectors = overrides_for("edge-3", {"env": "prod"}, overrides)
    result = customize(Snapshot(taskset=make_taskset(deployment("web"))), only_selectors, None)
    assert result.install[0].object["spec"]["replicas"] == 3


class RecordingRenderer:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def render(
        self,
        chart_archive_digest: str,
        values: dict[str, Any],
        name: str,
        namespace: str,
        previous: Taskset | None = None,
        context: RenderContext | None = None,
    ) -> Taskset:
        self.calls.append(
            {"archive": chart_archive_digest, "values": values, "name": name, "ns": namespace}
        )
        count = int(values.get("replicas", 1))
        return make_taskset(deployment("web", replicas=count), namespace=namespace)


def helm_snapshot() -> Snapshot:
    taskset = Taskset(
        name="web",
        namespace="apps",
        install=[Step(object=deployment("web"))],
        source=SourceInfo(format="helm", digest="sha256:src", chart_archive="sha256:chart"),
        ignore_paths=["/spec/replicas"],
    )
    return Snapshot(
        taskset=taskset,
        values={"replicas": 1, "image": {"tag": "1.0", "pull": "always"}},
        chart_archive="sha256:chart",
    )


def test_values_overrides_rerender_with_values_merged_in_precedence_order() -> None:
    renderer = RecordingRenderer()
    applicable = [
        Override(taskset="web", name="sel", selector="env=prod", values={"replicas": 3}),
        Override(
            taskset="web",
            name="mine",
            cluster="edge-1",
            values={"replicas": 4, "image": {"tag": "2.0"}},
        ),
    ]
    result = customize(helm_snapshot(), applicable, renderer)
    assert renderer.calls == [
        {
            "archive": "sha256:chart",
            "values": {"replicas": 4, "image": {"tag": "2.0", "pull": "always"}},
            "name": "web",
            "ns": "apps",
        }
    ]
    assert result.install[0].object["spec"]["replicas"] == 4
    assert result.ignore_paths == ["/spec/replicas"]
    assert result.source is not None
    assert result.source.chart_archive == "sha256:chart"


def test_values_overrides_on_a_taskset_not_from_helm_are_refused() -> None:
    applicable = [Override(taskset="web", name="v", cluster="c", values={"a": 1})]
    with pytest.raises(RefusedOverride, match="not published from a Helm chart"):
        customize(Snapshot(taskset=make_taskset(deployment())), applicable, RecordingRenderer())


def test_values_merge_deeply_and_null_removes_a_key() -> None:
    base = {"a": {"b": 1, "c": 2}, "d": [1]}
    assert merge_values(base, [{"a": {"c": None, "e": 3}}, {"d": [2]}]) == {
        "a": {"b": 1, "e": 3},
        "d": [2],
    }
    assert base == {"a": {"b": 1, "c": 2}, "d": [1]}


def test_preview_is_a_unified_diff_per_object_with_secrets_redacted() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "stringData": {"password": "hunter2"},
    }
    before = make_taskset(deployment("web"), secret, deployment("untouched"))
    after = apply_patches(
        before,
        parse_patches(
            [
                {
                    "target": {"kind": "Deployment", "name": "web"},
                    "mergePatch": {"spec": {"replicas": 3}},
                },
                {
                    "target": {"kind": "Secret", "name": "creds"},
                    "mergePatch": {"stringData": {"password": "s3cret"}},
                },
            ]
        ),
    )
    diff = preview_diff(before, after)
    assert "--- a/install/Deployment/web" in diff
    assert "-  replicas: 1\n" in diff
    assert "+  replicas: 3\n" in diff
    assert "Secret/creds" in diff
    assert "+  password: <masked, changed>" in diff
    assert "hunter2" not in diff
    assert "s3cret" not in diff
    assert "untouched" not in diff
    assert preview_diff(before, before) == ""
