"""The edge's kubeconfig forms against a real kube-apiserver: a token file that rotates, an
exec credential plugin, and a CA given as a file; both Kubernetes adapters of the edge (the
connector's executor and the controller's client) connect through each."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from cluster_controller.kube import Kube
from edge_connector.errors import ConnectorError
from edge_connector.kube_executor import KubernetesExecutor
from tests.kube_envtest import KubeAPIServer, running_kube_envtest

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    with running_kube_envtest(tmp_path_factory.mktemp("apiserver")) as api:
        yield api


def write_kubeconfig(api: KubeAPIServer, directory: Path, user: dict[str, Any]) -> Path:
    path = directory / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "envtest",
                        "cluster": {
                            "server": api.server,
                            "certificate-authority": str(api.ca_file),
                        },
                    }
                ],
                "users": [{"name": "admin", "user": user}],
                "contexts": [
                    {
                        "name": "envtest",
                        "context": {"cluster": "envtest", "user": "admin", "namespace": "edge"},
                    }
                ],
                "current-context": "envtest",
            }
        )
    )
    return path


async def versions_through_both_adapters(kubeconfig: Path) -> tuple[int, dict[str, Any]]:
    executor = KubernetesExecutor.from_kubeconfig(kubeconfig, cluster="c")
    kube = Kube.connect(kubeconfig)
    try:
        assert executor.namespace == "edge", "the context's namespace"
        response = await executor.http_client.get("/version")
        return response.status_code, await kube.request("GET", "/version")
    finally:
        await executor.close()
        await kube.close()


async def test_a_rotated_token_file_is_read_again_when_the_old_token_is_refused(
    apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("expired-token")
    kubeconfig = write_kubeconfig(apiserver, tmp_path, {"tokenFile": str(token)})
    executor = KubernetesExecutor.from_kubeconfig(kubeconfig, cluster="c")
    try:
        assert (await executor.http_client.get("/version")).status_code == 401
        token.write_text(apiserver.token)  # the kubelet's rotation

        assert (await executor.http_client.get("/version")).status_code == 200
    finally:
        await executor.close()


async def test_an_exec_plugin_token_reaches_the_apiserver(
    apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', "
        f"'kind': 'ExecCredential', 'status': {{'token': {apiserver.token!r}}}}}))\n"
    )
    exec_user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
        }
    }
    kubeconfig = write_kubeconfig(apiserver, tmp_path, exec_user)

    status, version = await versions_through_both_adapters(kubeconfig)

    assert status == 200
    assert version.get("gitVersion", "").startswith("v1.")


async def test_a_wrong_ca_is_refused_in_the_handshake(
    apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig(apiserver, tmp_path, {"token": apiserver.token})
    config = yaml.safe_load(kubeconfig.read_text())
    del config["clusters"][0]["cluster"]["certificate-authority"]  # the system's CAs instead
    kubeconfig.write_text(yaml.safe_dump(config))
    executor = KubernetesExecutor.from_kubeconfig(kubeconfig, cluster="c")
    try:
        with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await executor.http_client.get("/version")
    finally:
        await executor.close()


def test_an_unusable_kubeconfig_is_a_connector_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("current-context: gone\ncontexts: []\n")

    with pytest.raises(ConnectorError, match=rf"kubeconfig {path}: current-context 'gone'"):
        KubernetesExecutor.from_kubeconfig(path, cluster="c")


async def test_an_idle_watch_holds_one_request_and_renews_from_the_last_version(
    apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    """The executor's watch costs nothing while nothing changes: one request held open (the
    apiserver ends it after `server_timeout`; then it is renewed from the last version seen,
    without a list)."""
    import asyncio

    from edge_connector.kube_executor import ApiClient
    from kube_contract.resources import ResourceInfo

    configmaps = ResourceInfo(
        group="", version="v1", kind="ConfigMap", plural="configmaps", namespaced=True
    )
    client = ApiClient.from_kubeconfig(apiserver.kubeconfig)
    requests: list[str] = []

    async def count(request: httpx2.Request) -> None:
        requests.append(str(request.url.params.get("watch", "list")))

    client.http.event_hooks["request"] = [count]
    try:
        listing = client.list(configmaps, namespace="default")
        _ = [item async for item in listing]
        seen: list[tuple[str, dict[str, Any]]] = []

        async def follow() -> None:
            async for event in client.watch(
                configmaps,
                namespace="default",
                resource_version=listing.resourceVersion,
                server_timeout=1,
            ):
                seen.append(event)

        watching = asyncio.create_task(follow())
        await asyncio.sleep(3.5)
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    finally:
        await client.close()

    assert requests[0] == "list"
    watches = requests[1:]
    assert watches
    assert all(w == "true" for w in watches)
    assert 2 <= len(watches) <= 5, f"renewed once a second, not in a loop: {len(watches)}"
    assert seen == []
