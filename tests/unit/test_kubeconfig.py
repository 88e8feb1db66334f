"""The edge's kubeconfig reader (`kube_http.kubeconfig`) and the credentials and TLS settings
`kube_http.client` makes of it: every form users write, and the errors for bad ones."""

from __future__ import annotations

import base64
import os
import ssl
import stat
import sys
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from access.pki import CertificateAuthority
from kube_http.client import BearerAuth, auth_of, connect, ssl_context
from kube_http.kubeconfig import KubeconfigError, in_cluster, load_config

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def kubeconfig(
    tmp_path: Path,
    *,
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    contexts: list[dict[str, Any]] | None = None,
    current: str | None = "main",
    name: str = "config",
) -> Path:
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": cluster or {"server": "https://api.example:6443"}},
            {"name": "other", "cluster": {"server": "https://other.example:6443"}},
        ],
        "users": [{"name": "u", "user": user or {}}],
        "contexts": contexts
        or [
            {"name": "main", "context": {"cluster": "c", "user": "u", "namespace": "apps"}},
            {"name": "second", "context": {"cluster": "other", "user": "u"}},
        ],
    }
    if current is not None:
        document["current-context"] = current
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def first_header(auth: httpx2.Auth | None) -> str:
    assert isinstance(auth, BearerAuth)
    flow = auth.async_auth_flow(httpx2.Request("GET", "https://api.example/api"))
    request = await flow.__anext__()
    await flow.aclose()
    return request.headers["Authorization"]


async def header_after_401(auth: httpx2.Auth | None) -> tuple[str, str]:
    """The header of a request, and of its repetition once the apiserver answered 401."""
    assert isinstance(auth, BearerAuth)
    flow: AsyncGenerator[httpx2.Request, httpx2.Response] = auth.async_auth_flow(
        httpx2.Request("GET", "https://api.example/api")
    )
    first = (await flow.__anext__()).headers["Authorization"]
    again = await flow.asend(httpx2.Response(401))
    await flow.aclose()
    return first, again.headers["Authorization"]


# --- contexts -----------------------------------------------------------------------------------


def test_the_current_context_gives_server_namespace_and_token(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, user={"token": "t0k"})

    config = load_config(path)

    assert config.context == "main"
    assert config.server == "https://api.example:6443"
    assert config.namespace == "apps"
    assert config.token == "t0k"
    assert config.source == str(path)


def test_a_named_context_wins_over_the_current_one(tmp_path: Path) -> None:
    config = load_config(kubeconfig(tmp_path, user={"token": "t"}), "second")

    assert config.context == "second"
    assert config.server == "https://other.example:6443"
    assert config.namespace is None


def test_kubeconfig_files_listed_in_the_environment_merge_first_one_wins(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path, user={"token": "first"}, name="a")
    second = kubeconfig(tmp_path, user={"token": "second"}, current="second", name="b")

    config = load_config(environ={"KUBECONFIG": f"{first}{os.pathsep}{second}"})

    assert config.context == "main"
    assert config.token == "first"


def test_without_a_path_home_kube_config_is_read(tmp_path: Path) -> None:
    (tmp_path / ".kube").mkdir()
    kubeconfig(tmp_path / ".kube", user={"token": "home"})

    assert load_config(environ={"HOME": str(tmp_path)}).token == "home"


# --- credentials --------------------------------------------------------------------------------


async def test_a_static_token_is_sent_as_bearer(tmp_path: Path) -> None:
    config = load_config(kubeconfig(tmp_path, user={"token": "static"}))

    assert await first_header(auth_of(config)) == "Bearer static"


async def test_a_token_file_is_read_again_after_a_401(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("old\n")
    config = load_config(kubeconfig(tmp_path, user={"tokenFile": "token"}))
    assert config.token_file == token  # relative to the kubeconfig's directory
    auth = auth_of(config)
    assert await first_header(auth) == "Bearer old"

    token.write_text("rotated\n")
    first, again = await header_after_401(auth)

    assert first == "Bearer old"  # read at most once a minute...
    assert again == "Bearer rotated"  # ...but at once when the apiserver refuses it


async def test_a_token_file_is_read_again_once_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kube_http.client as client

    token = tmp_path / "token"
    token.write_text("old")
    auth = auth_of(load_config(kubeconfig(tmp_path, user={"tokenFile": str(token)})))
    assert await first_header(auth) == "Bearer old"
    token.write_text("new")
    monkeypatch.setattr(client, "TOKEN_FILE_REREAD_S", 0.0)

    assert await first_header(auth) == "Bearer new"


async def test_a_missing_token_file_is_named_when_a_request_needs_it(tmp_path: Path) -> None:
    auth = auth_of(load_config(kubeconfig(tmp_path, user={"tokenFile": "gone"})))

    with pytest.raises(KubeconfigError, match=r"token file .*gone") as raised:
        await first_header(auth)

    # To the adapters a transport failure: retried with backoff, as the file may come.
    assert isinstance(raised.value, httpx2.TransportError)


async def test_basic_auth_is_used_when_the_user_has_a_username_and_password(
    tmp_path: Path,
) -> None:
    auth = auth_of(load_config(kubeconfig(tmp_path, user={"username": "a", "password": "b"})))

    assert isinstance(auth, httpx2.BasicAuth)


def exec_plugin(
    tmp_path: Path, api_version: str, *, expires_in: float | None, answer_version: str = ""
) -> dict[str, Any]:
    """A plugin printing a new token on each run (counting runs in a file), its expiry
    `expires_in` seconds ahead, and KUBERNETES_EXEC_INFO's apiVersion and cluster server."""
    script = tmp_path / "plugin.py"
    expiry = (
        f"(datetime.now(UTC) + timedelta(seconds={expires_in})).isoformat()"
        if expires_in is not None
        else "None"
    )
    script.write_text(
        "import json, os, sys\n"
        "from datetime import UTC, datetime, timedelta\n"
        f"count = {str(tmp_path / 'runs')!r}\n"
        "runs = int(open(count).read()) + 1 if os.path.exists(count) else 1\n"
        "open(count, 'w').write(str(runs))\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "status = {'token': f\"tok-{runs}-{os.environ['PLUGIN_ARG']}-\" + sys.argv[1]}\n"
        f"expiry = {expiry}\n"
        "if expiry: status['expirationTimestamp'] = expiry.replace('+00:00', 'Z')\n"
        "print(json.dumps({'apiVersion': "
        f"{answer_version or api_version!r}, 'kind': 'ExecCredential', 'status': status}}))\n"
    )
    return {
        "exec": {
            "apiVersion": api_version,
            "command": sys.executable,
            "args": [str(script), "x"],
            "env": [{"name": "PLUGIN_ARG", "value": "e"}],
            "provideClusterInfo": True,
        }
    }


@pytest.mark.parametrize(
    "api_version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"]
)
async def test_an_exec_plugin_token_is_kept_until_it_nears_expiry(
    tmp_path: Path, api_version: str
) -> None:
    long_lived = exec_plugin(tmp_path, api_version, expires_in=3600)
    auth = auth_of(load_config(kubeconfig(tmp_path, user=long_lived)))

    assert await first_header(auth) == "Bearer tok-1-e-x"
    assert await first_header(auth) == "Bearer tok-1-e-x"  # not run again


async def test_an_exec_plugin_token_about_to_expire_is_fetched_again(tmp_path: Path) -> None:
    expiring = exec_plugin(tmp_path, "client.authentication.k8s.io/v1", expires_in=5)
    auth = auth_of(load_config(kubeconfig(tmp_path, user=expiring)))

    assert await first_header(auth) == "Bearer tok-1-e-x"
    assert await first_header(auth) == "Bearer tok-2-e-x"  # 5 s left is within the margin


async def test_an_exec_plugin_runs_again_when_its_token_is_refused(tmp_path: Path) -> None:
    plugin = exec_plugin(tmp_path, "client.authentication.k8s.io/v1", expires_in=None)
    auth = auth_of(load_config(kubeconfig(tmp_path, user=plugin)))

    assert await header_after_401(auth) == ("Bearer tok-1-e-x", "Bearer tok-2-e-x")


async def test_an_exec_plugin_answering_another_api_version_is_refused(tmp_path: Path) -> None:
    plugin = exec_plugin(
        tmp_path,
        "client.authentication.k8s.io/v1",
        expires_in=None,
        answer_version="client.authentication.k8s.io/v1beta1",
    )
    auth = auth_of(load_config(kubeconfig(tmp_path, user=plugin)))

    with pytest.raises(KubeconfigError, match=r"answered apiVersion .*v1beta1"):
        await first_header(auth)


async def test_an_exec_plugin_that_fails_is_reported_with_its_output(tmp_path: Path) -> None:
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": ["-c", "import sys; print('not logged in', file=sys.stderr); sys.exit(3)"],
        }
    }
    auth = auth_of(load_config(kubeconfig(tmp_path, user=user)))

    with pytest.raises(KubeconfigError, match=r"exited with 3: not logged in"):
        await first_header(auth)


async def test_an_exec_plugin_that_cannot_run_names_its_install_hint(tmp_path: Path) -> None:
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "/nonexistent/kubelogin",
            "installHint": "install kubelogin",
        }
    }
    auth = auth_of(load_config(kubeconfig(tmp_path, user=user)))

    with pytest.raises(KubeconfigError, match=r"kubelogin.*cannot run it.*install kubelogin"):
        await first_header(auth)


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority.create(NOW)


def test_the_ca_and_client_certificate_load_inline(
    tmp_path: Path, authority: CertificateAuthority
) -> None:
    client = authority.issue_cluster("edge-1", NOW)
    config = load_config(
        kubeconfig(
            tmp_path,
            cluster={
                "server": "https://api.example",
                "certificate-authority-data": b64(authority.cert_pem),
            },
            user={
                "client-certificate-data": b64(client.cert_pem),
                "client-key-data": b64(client.key_pem),
            },
        )
    )

    context = ssl_context(config)

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("fleetbus-client-*"))


def test_the_ca_and_client_certificate_load_from_files(
    tmp_path: Path, authority: CertificateAuthority
) -> None:
    client = authority.issue_cluster("edge-1", NOW)
    (tmp_path / "ca.crt").write_bytes(authority.cert_pem)
    (tmp_path / "tls.crt").write_bytes(client.cert_pem)
    (tmp_path / "tls.key").write_bytes(client.key_pem)
    config = load_config(
        kubeconfig(
            tmp_path,
            cluster={"server": "https://api.example", "certificate-authority": "ca.crt"},
            user={"client-certificate": "tls.crt", "client-key": str(tmp_path / "tls.key")},
        )
    )

    assert len(ssl_context(config).get_ca_certs()) == 1


def test_insecure_skip_tls_verify_turns_verification_off(tmp_path: Path) -> None:
    config = load_config(
        kubeconfig(
            tmp_path, cluster={"server": "https://api.example", "insecure-skip-tls-verify": True}
        )
    )

    context = ssl_context(config)

    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname


def test_a_ca_that_is_no_certificate_is_named(tmp_path: Path) -> None:
    config = load_config(
        kubeconfig(
            tmp_path,
            cluster={
                "server": "https://api.example",
                "certificate-authority-data": b64(b"not a certificate"),
            },
        )
    )

    with pytest.raises(KubeconfigError, match=r"config: the cluster's certificate-authority-data"):
        ssl_context(config)


def test_a_missing_client_key_file_is_named(
    tmp_path: Path, authority: CertificateAuthority
) -> None:
    (tmp_path / "tls.crt").write_bytes(authority.issue_cluster("e", NOW).cert_pem)
    config = load_config(
        kubeconfig(tmp_path, user={"client-certificate": "tls.crt", "client-key": "tls.key"})
    )

    with pytest.raises(KubeconfigError, match=r"client-key .*tls.key: No such file"):
        ssl_context(config)


def test_the_tls_server_name_is_sent_in_the_handshake(tmp_path: Path) -> None:
    config = load_config(
        kubeconfig(
            tmp_path,
            cluster={"server": "https://10.0.0.1:6443", "tls-server-name": "kubernetes"},
        )
    )

    client = connect(config, timeout=httpx2.Timeout(1.0))

    hooks = client.event_hooks["request"]
    assert len(hooks) == 1
    assert str(client.base_url).startswith("https://10.0.0.1:6443")


# --- in-cluster ---------------------------------------------------------------------------------


def service_account(tmp_path: Path, authority: CertificateAuthority) -> Path:
    root = tmp_path / "serviceaccount"
    root.mkdir()
    (root / "token").write_text("sa-1")
    (root / "ca.crt").write_bytes(authority.cert_pem)
    (root / "namespace").write_text("edge\n")
    return root


async def test_in_a_pod_the_service_account_is_used_and_its_token_rotates(
    tmp_path: Path, authority: CertificateAuthority
) -> None:
    root = service_account(tmp_path, authority)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}

    config = load_config(environ=env, in_cluster_root=root)

    assert config.server == "https://10.96.0.1:443"
    assert config.namespace == "edge"
    assert len(ssl_context(config).get_ca_certs()) == 1
    auth = auth_of(config)
    assert await first_header(auth) == "Bearer sa-1"
    (root / "token").write_text("sa-2")  # the kubelet's rotation
    assert await header_after_401(auth) == ("Bearer sa-1", "Bearer sa-2")


def test_in_cluster_an_ipv6_service_host_is_bracketed(
    tmp_path: Path, authority: CertificateAuthority
) -> None:
    root = service_account(tmp_path, authority)

    config = in_cluster(environ={"KUBERNETES_SERVICE_HOST": "fd00::1"}, root=root)

    assert config.server == "https://[fd00::1]:443"


def test_in_cluster_without_a_token_file_says_so(
    tmp_path: Path, authority: CertificateAuthority
) -> None:
    root = service_account(tmp_path, authority)
    (root / "token").unlink()

    with pytest.raises(KubeconfigError, match=r"no token file"):
        in_cluster(environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, root=root)


# --- bad kubeconfigs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clusters: [oops\n", r"line 2: not valid YAML"),
        ("- a\n- b\n", r"not a mapping but list"),
        ("clusters: {}\n", r"clusters: not a list"),
        ("clusters: [{cluster: {server: https://x}}]\n", r"clusters\[0\]: needs a name"),
        ("contexts: []\n", r"no current-context set"),
        ("current-context: nope\ncontexts: []\n", r"current-context 'nope' is not among"),
    ],
)
def test_a_malformed_kubeconfig_is_refused_naming_file_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "config"
    path.write_text(text)

    with pytest.raises(KubeconfigError, match=message) as raised:
        load_config(path)

    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("cluster", "user", "message"),
    [
        ({"server": ""}, {}, r"clusters\[0\]\.cluster\.server: missing"),
        ({"server": "api:6443"}, {}, r"server: 'api:6443' is not an http\(s\) URL"),
        (
            {"server": "https://x", "certificate-authority-data": "%%%"},
            {},
            r"certificate-authority-data: not base64",
        ),
        (
            {"server": "https://x", "insecure-skip-tls-verify": "yes"},
            {},
            r"insecure-skip-tls-verify: not true or false",
        ),
        ({"server": "https://x"}, {"client-certificate": "c.crt"}, r"client-key .* missing"),
        ({"server": "https://x"}, {"token": 5}, r"users\[0\]\.user\.token: not a string"),
        (
            {"server": "https://x"},
            {"auth-provider": {"name": "gcp"}},
            r"auth-provider: not supported",
        ),
        (
            {"server": "https://x"},
            {"exec": {"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}},
            r"exec\.apiVersion: 'client.authentication.k8s.io/v1alpha1' is not one of",
        ),
        (
            {"server": "https://x"},
            {"exec": {"apiVersion": "client.authentication.k8s.io/v1"}},
            r"exec\.command: missing",
        ),
    ],
)
def test_a_bad_cluster_or_user_entry_is_refused_naming_the_field(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any], message: str
) -> None:
    path = kubeconfig(tmp_path, cluster=cluster, user=user)

    with pytest.raises(KubeconfigError, match=message) as raised:
        load_config(path)

    assert str(path) in str(raised.value)


def test_an_unknown_context_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match=r"--context 'prod' is not among .*main, second"):
        load_config(kubeconfig(tmp_path), "prod")


def test_a_context_naming_a_missing_cluster_is_refused(tmp_path: Path) -> None:
    contexts = [{"name": "main", "context": {"cluster": "gone", "user": "u"}}]

    with pytest.raises(KubeconfigError, match=r"contexts\[0\]\.context\.cluster: no cluster"):
        load_config(kubeconfig(tmp_path, contexts=contexts))


def test_an_unreadable_kubeconfig_is_named(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path)
    path.chmod(0)
    if os.access(path, os.R_OK):  # running as root: every file is readable
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        path = tmp_path / "missing"

    with pytest.raises(KubeconfigError, match=rf"cannot read kubeconfig {path}"):
        load_config(path)


def test_no_kubeconfig_anywhere_says_where_one_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match=r"no kubeconfig: .*\.kube/config"):
        load_config(environ={"HOME": str(tmp_path)})


def test_a_secret_of_the_kubeconfig_is_not_in_the_config_repr(tmp_path: Path) -> None:
    config = load_config(kubeconfig(tmp_path, user={"token": "s3cr3t-token"}))

    assert "s3cr3t-token" not in repr(config)
