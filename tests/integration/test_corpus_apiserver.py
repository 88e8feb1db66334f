"""The real apiserver accepts what the corpus normalizes to, in the namespaces fleetbus chose.

For every corpus chart and Kustomize example: its CRDs are applied (server-side apply) and
awaited until Established, then every other object is sent as a server-side apply dry run
(`dryRun=All`). Before each, the apiserver's own discovery says whether the kind is
namespaced, and the object must agree: a namespace on every namespaced object, none on a
cluster-scoped one. The only refusals allowed are the API versions the server no longer
serves, listed in `UNSERVED` (the Helm 2 chart's `apiextensions.k8s.io/v1beta1` CRD).
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from normalizer import NormalizeOptions, normalize
from taskset.model import Taskset
from tests.corpus_cases import CHARTS, KUSTOMIZATIONS
from tests.eventually import wait_until
from tests.kube_envtest import KubeAPIError, KubeAPIServer, create_namespace, unique_namespace_name

pytestmark = pytest.mark.kube

UNSERVED = {"jaeger-operator": {"apiextensions.k8s.io/v1beta1 CustomResourceDefinition"}}
REFUSED_UPSTREAM = {
    # The kustomize examples are about kustomize, not valid apps/v1 Deployments: theirs
    # have no spec.selector. The apiserver refuses them for that, and only for that.
    "components/overlays/community": {"Deployment/example": "spec.selector: Required value"},
    "components/overlays/enterprise": {"Deployment/example": "spec.selector: Required value"},
    "components/overlays/dev": {"Deployment/example": "spec.selector: Required value"},
    "patches": {
        "Deployment/deploy1": "spec.selector: Required value",
        "Deployment/deploy2": "spec.selector: Required value",
    },
}
ESTABLISH_TIMEOUT_S = 60.0


class Discovery:
    def __init__(self, api: KubeAPIServer) -> None:
        self.api = api
        self.resources: dict[str, dict[str, dict[str, Any]] | None] = {}

    def resource(self, api_version: str, kind: str) -> dict[str, Any] | None:
        if api_version not in self.resources:
            path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            try:
                listed = self.api.request("GET", path)["resources"]
            except KubeAPIError as e:
                if e.status != 404:
                    raise
                self.resources[api_version] = None
            else:
                self.resources[api_version] = {r["kind"]: r for r in listed if "/" not in r["name"]}
        served = self.resources[api_version]
        return None if served is None else served.get(kind)

    def forget(self) -> None:
        self.resources.clear()


def object_path(api_version: str, resource: dict[str, Any], manifest: dict[str, Any]) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    name = urllib.parse.quote(manifest["metadata"]["name"], safe="")
    namespace = manifest["metadata"].get("namespace")
    scope = f"/namespaces/{namespace}" if resource["namespaced"] else ""
    return f"{base}{scope}/{resource['name']}/{name}"


def apply(api: KubeAPIServer, path: str, manifest: dict[str, Any], *, dry_run: bool) -> None:
    query = "fieldManager=fleetbus-corpus&force=true" + ("&dryRun=All" if dry_run else "")
    api.request("PATCH", f"{path}?{query}", manifest, content_type="application/apply-patch+yaml")


def wait_established(api: KubeAPIServer, name: str) -> None:
    def established() -> bool:
        crd = api.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_until(established, f"CRD {name} to be Established", within=ESTABLISH_TIMEOUT_S)


def await_discovery(discovery: Discovery, api_version: str, kind: str) -> None:
    """Discovery lags a CRD's Established condition a little: poll until the kind is served."""

    def served() -> bool:
        if discovery.resource(api_version, kind) is not None:
            return True
        discovery.forget()
        return False

    wait_until(served, f"{kind} of {api_version} to be served", within=ESTABLISH_TIMEOUT_S)


def send_to_apiserver(api: KubeAPIServer, taskset: Taskset) -> tuple[list[str], set[str]]:
    """Problems found (scope disagreements, refusals), and the unserved API versions met."""
    discovery = Discovery(api)
    problems: list[str] = []
    unserved: set[str] = set()
    steps = [step for _, step in taskset.steps()]
    crds = [s for s in steps if s.ref.kind == "CustomResourceDefinition"]
    for step in crds:
        resource = discovery.resource(step.ref.api_version, step.ref.kind)
        if resource is None:
            unserved.add(f"{step.ref.api_version} {step.ref.kind}")
            continue
        apply(
            api,
            object_path(step.ref.api_version, resource, step.object),
            step.object,
            dry_run=False,
        )
        wait_established(api, step.ref.name)
    for step in crds:
        spec = step.object["spec"]
        for version in spec["versions"] if step.ref.api_version.endswith("/v1") else []:
            await_discovery(discovery, f"{spec['group']}/{version['name']}", spec["names"]["kind"])
    seen: set[str] = set()
    for step in steps:
        if step.ref.kind == "CustomResourceDefinition" or str(step.ref) in seen:
            continue
        seen.add(str(step.ref))
        resource = discovery.resource(step.ref.api_version, step.ref.kind)
        if resource is None:
            unserved.add(f"{step.ref.api_version} {step.ref.kind}")
            continue
        namespace = step.object["metadata"].get("namespace")
        if resource["namespaced"] != bool(namespace):
            problems.append(
                f"{step.ref}: the apiserver says namespaced={resource['namespaced']}, "
                f"fleetbus gave namespace {namespace!r}"
            )
            continue
        try:
            apply(
                api,
                object_path(step.ref.api_version, resource, step.object),
                step.object,
                dry_run=True,
            )
        except KubeAPIError as e:
            problems.append(f"{step.ref}: HTTP {e.status}: {e.json().get('message', e.body)[:300]}")
    return problems, unserved


def ensure_namespaces(api: KubeAPIServer, taskset: Taskset) -> None:
    wanted = {step.object["metadata"].get("namespace") for _, step in taskset.steps()} - {
        None,
        "",
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
    }
    for namespace in sorted(str(n) for n in wanted):
        try:
            create_namespace(api, namespace)
        except KubeAPIError as e:
            if e.status != 409:
                raise


@pytest.mark.parametrize("case", CHARTS, ids=[case.name for case in CHARTS])
def test_the_apiserver_accepts_every_object_of_a_corpus_chart(
    kube_apiserver: KubeAPIServer, case: Any
) -> None:
    namespace = unique_namespace_name(case.name)
    taskset = normalize(
        case.directory, NormalizeOptions(name=case.release, namespace=namespace)
    ).taskset
    ensure_namespaces(kube_apiserver, taskset)
    problems, unserved = send_to_apiserver(kube_apiserver, taskset)
    assert problems == []
    assert unserved == UNSERVED.get(case.name, set())


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d).split("kustomize/")[1])
def test_the_apiserver_accepts_every_object_of_a_corpus_kustomization(
    kube_apiserver: KubeAPIServer, directory: Path
) -> None:
    namespace = unique_namespace_name("kustomize")
    taskset = normalize(directory, NormalizeOptions(name="example", namespace=namespace)).taskset
    ensure_namespaces(kube_apiserver, taskset)
    problems, unserved = send_to_apiserver(kube_apiserver, taskset)
    expected = REFUSED_UPSTREAM.get(str(directory).split("kustomize/")[1], {})
    refused = {
        problem.split(":", 1)[0].replace(f"/{namespace}/", "/"): problem for problem in problems
    }
    assert sorted(refused) == sorted(expected)
    for what, fragment in expected.items():
        assert fragment in refused[what]
    assert unserved == set()
