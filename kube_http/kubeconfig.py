"""Reading a kubeconfig (or the in-cluster ServiceAccount) into what a connection needs.

The edge connects to one apiserver and needs only this of a Kubernetes client library: the
server, how to trust it, and who to be. Reading it here, with the standard library (and PyYAML
for a kubeconfig that is not JSON), spares the edge process a client library whose import
alone costs megabytes of models it never uses.

Covered, as kubectl reads them:

* the current context, or the one named (`--context`); `$KUBECONFIG` as a list of files merged
  the way kubectl merges them (the first file to name a cluster, user or context wins);
* the server's CA as a file or inline (`certificate-authority`, `-data`), or
  `insecure-skip-tls-verify`, and `tls-server-name`;
* client certificates as files or inline data;
* bearer tokens, inline or as a file re-read as it rotates (`tokenFile`), and basic auth;
* exec credential plugins (`client.authentication.k8s.io/v1` and `v1beta1`) returning a
  token, run again when the token expires or the apiserver refuses it;
* in-cluster: the ServiceAccount's token (a projected token the kubelet rotates: re-read),
  CA and namespace.

Every error is a `KubeconfigError` naming the file and the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

IN_CLUSTER_ROOT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


class KubeconfigError(ValueError):
    """A kubeconfig that cannot be used; the message names the file and the field."""


@dataclass(frozen=True, kw_only=True)
class ExecPlugin:
    """A `users[].user.exec` credential plugin."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str
    provide_cluster_info: bool = False
    install_hint: str = ""


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """One context of a kubeconfig, resolved: where, how to trust it, who to be."""

    source: str
    """The kubeconfig file (or "in-cluster ServiceAccount"), for messages."""
    context: str
    server: str
    namespace: str | None = None
    ca_file: Path | None = None
    ca_data: bytes | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    client_cert_data: bytes | None = field(default=None, repr=False)
    client_key_data: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    exec_plugin: ExecPlugin | None = None

    def with_token(self, token: str) -> ClusterConfig:
        """The same server and trust, authenticating with `token` alone."""
        return replace(
            self,
            client_cert_file=None,
            client_key_file=None,
            client_cert_data=None,
            client_key_data=None,
            token=token,
            token_file=None,
            username=None,
            password=None,
            exec_plugin=None,
        )


def load_config(
    path: Path | None = None,
    context: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    in_cluster_root: Path = IN_CLUSTER_ROOT,
) -> ClusterConfig:
    """The context `context` (else the current one) of the kubeconfig at `path`; without a
    path, the in-cluster ServiceAccount when running in a pod, else `$KUBECONFIG`, else
    `~/.kube/config`."""
    env = os.environ if environ is None else environ
    if path is not None:
        return _from_files([Path(path)], context)
    if env.get("KUBERNETES_SERVICE_HOST") and (in_cluster_root / "token").exists():
        if context:
            raise KubeconfigError(
                f"--context {context}: running in a pod without a kubeconfig, the in-cluster "
                "ServiceAccount has no contexts"
            )
        return in_cluster(environ=env, root=in_cluster_root)
    listed = env.get("KUBECONFIG", "")
    if listed:
        files = [Path(p) for p in listed.split(os.pathsep) if p]
        existing = [p for p in files if p.exists()]
        if not existing:
            raise KubeconfigError(f"$KUBECONFIG names no existing file: {listed}")
        return _from_files(existing, context)
    default = Path(env.get("HOME", "~")).expanduser() / ".kube" / "config"
    if not default.exists():
        raise KubeconfigError(
            f"no kubeconfig: give one, set $KUBECONFIG, or create {default} "
            "(nor is this a pod with a ServiceAccount)"
        )
    return _from_files([default], context)


def in_cluster(
    *, environ: Mapping[str, str] | None = None, root: Path = IN_CLUSTER_ROOT
) -> ClusterConfig:
    """The pod's ServiceAccount: its token file (re-read as the kubelet rotates it), the
    cluster's CA and the pod's namespace."""
    env = os.environ if environ is None else environ
    source = f"in-cluster ServiceAccount ({root})"
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise KubeconfigError(f"{source}: KUBERNETES_SERVICE_HOST is not set")
    token = root / "token"
    if not token.is_file():
        raise KubeconfigError(f"{source}: no token file {token}")
    ca = root / "ca.crt"
    if not ca.is_file():
        raise KubeconfigError(f"{source}: no CA file {ca}")
    namespace_file = root / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.is_file() else None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return ClusterConfig(
        source=source,
        context="in-cluster",
        server=f"https://{host}:{port}",
        namespace=namespace or None,
        ca_file=ca,
        token_file=token,
    )


# --- reading the files ---------------------------------------------------------------------------


def _read_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {e.strerror or e}") from e
    document = _parse(text, path)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise KubeconfigError(f"kubeconfig {path}: not a mapping but {type(document).__name__}")
    return document


def _parse(text: str, path: Path) -> Any:
    """A kubeconfig written as JSON (YAML's subset; kubectl reads both, and the edge chart
    writes its kubeconfig so) is read with the standard library; any other with PyYAML,
    imported only then (about 4 MiB resident for a process that would not load it else)."""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass  # YAML's flow style, perhaps: let the YAML parser judge
    import yaml

    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise KubeconfigError(f"kubeconfig {path}{where}: not valid YAML") from e


class _Entry:
    """A named cluster, user or context, with the file that defined it."""

    def __init__(self, path: Path, body: dict[str, Any], where: str) -> None:
        self.path = path
        self.body = body
        self.where = where


def _named(path: Path, document: dict[str, Any], section: str, inner: str) -> dict[str, _Entry]:
    listed = document.get(section)
    if listed is None:
        return {}
    if not isinstance(listed, list):
        raise KubeconfigError(f"kubeconfig {path}: {section}: not a list")
    found: dict[str, _Entry] = {}
    for index, item in enumerate(listed):
        where = f"{section}[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise KubeconfigError(f"kubeconfig {path}: {where}: needs a name")
        body = item.get(inner) or {}
        if not isinstance(body, dict):
            raise KubeconfigError(f"kubeconfig {path}: {where}.{inner}: not a mapping")
        found.setdefault(item["name"], _Entry(path, body, f"{where}.{inner}"))
    return found


def _from_files(paths: list[Path], context: str | None) -> ClusterConfig:
    clusters: dict[str, _Entry] = {}
    users: dict[str, _Entry] = {}
    contexts: dict[str, _Entry] = {}
    current = ""
    for path in paths:
        document = _read_document(path)
        for name, entry in _named(path, document, "clusters", "cluster").items():
            clusters.setdefault(name, entry)
        for name, entry in _named(path, document, "users", "user").items():
            users.setdefault(name, entry)
        for name, entry in _named(path, document, "contexts", "context").items():
            contexts.setdefault(name, entry)
        current = current or str(document.get("current-context") or "")
    files = ", ".join(str(p) for p in paths)
    chosen = context or current
    if not chosen:
        raise KubeconfigError(f"kubeconfig {files}: no current-context set and no --context given")
    if chosen not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        field_name = "--context" if context else "current-context"
        raise KubeconfigError(
            f"kubeconfig {files}: {field_name} {chosen!r} is not among its contexts ({known})"
        )
    ctx = contexts[chosen]
    cluster_name = ctx.body.get("cluster")
    if not isinstance(cluster_name, str) or cluster_name not in clusters:
        raise KubeconfigError(
            f"kubeconfig {ctx.path}: {ctx.where}.cluster: no cluster named {cluster_name!r}"
        )
    user_name = ctx.body.get("user")
    if user_name is not None and (not isinstance(user_name, str) or user_name not in users):
        raise KubeconfigError(
            f"kubeconfig {ctx.path}: {ctx.where}.user: no user named {user_name!r}"
        )
    namespace = ctx.body.get("namespace")
    config = ClusterConfig(
        source=str(ctx.path),
        context=chosen,
        server="",
        namespace=str(namespace) if namespace else None,
    )
    config = _with_cluster(config, clusters[cluster_name])
    if user_name is not None:
        config = _with_user(config, users[user_name])
    return config


def _text(entry: _Entry, key: str) -> str | None:
    value = entry.body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise KubeconfigError(f"kubeconfig {entry.path}: {entry.where}.{key}: not a string")
    return value


def _file(entry: _Entry, key: str) -> Path | None:
    """A file the kubeconfig names, relative to the kubeconfig's directory; read when the
    connection is made (a pod's files may be mounted after the kubeconfig is read)."""
    value = _text(entry, key)
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = entry.path.parent / path
    return path


def _data(entry: _Entry, key: str) -> bytes | None:
    value = _text(entry, key)
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise KubeconfigError(f"kubeconfig {entry.path}: {entry.where}.{key}: not base64") from e


def _with_cluster(config: ClusterConfig, entry: _Entry) -> ClusterConfig:
    server = _text(entry, "server")
    if server is None:
        raise KubeconfigError(f"kubeconfig {entry.path}: {entry.where}.server: missing")
    if not server.startswith(("https://", "http://")):
        raise KubeconfigError(
            f"kubeconfig {entry.path}: {entry.where}.server: {server!r} is not an http(s) URL"
        )
    insecure = entry.body.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise KubeconfigError(
            f"kubeconfig {entry.path}: {entry.where}.insecure-skip-tls-verify: not true or false"
        )
    return replace(
        config,
        server=server.rstrip("/"),
        ca_data=_data(entry, "certificate-authority-data"),
        ca_file=_file(entry, "certificate-authority"),
        insecure_skip_tls_verify=insecure,
        tls_server_name=_text(entry, "tls-server-name"),
    )


def _with_user(config: ClusterConfig, entry: _Entry) -> ClusterConfig:
    for unsupported in ("auth-provider", "username-password-prompt"):
        if entry.body.get(unsupported):
            raise KubeconfigError(
                f"kubeconfig {entry.path}: {entry.where}.{unsupported}: not supported "
                "(use an exec credential plugin)"
            )
    cert_data = _data(entry, "client-certificate-data")
    key_data = _data(entry, "client-key-data")
    cert_file = _file(entry, "client-certificate")
    key_file = _file(entry, "client-key")
    has_cert = cert_data is not None or cert_file is not None
    has_key = key_data is not None or key_file is not None
    if has_cert != has_key:
        missing = "client-key" if has_cert else "client-certificate"
        raise KubeconfigError(
            f"kubeconfig {entry.path}: {entry.where}: {missing} (or {missing}-data) missing"
        )
    return replace(
        config,
        client_cert_data=cert_data,
        client_key_data=key_data,
        client_cert_file=cert_file,
        client_key_file=key_file,
        token=_text(entry, "token"),
        token_file=_file(entry, "tokenFile"),
        username=_text(entry, "username"),
        password=_text(entry, "password"),
        exec_plugin=_exec_plugin(entry),
    )


def _exec_plugin(entry: _Entry) -> ExecPlugin | None:
    body = entry.body.get("exec")
    if body is None:
        return None
    where = f"kubeconfig {entry.path}: {entry.where}.exec"
    if not isinstance(body, dict):
        raise KubeconfigError(f"{where}: not a mapping")
    command = body.get("command")
    if not isinstance(command, str) or not command:
        raise KubeconfigError(f"{where}.command: missing")
    if os.sep in command and not Path(command).is_absolute():
        # As kubectl: a relative path with a directory is relative to the kubeconfig's.
        command = str(entry.path.parent / command)
    api_version = body.get("apiVersion")
    if api_version not in EXEC_API_VERSIONS:
        raise KubeconfigError(
            f"{where}.apiVersion: {api_version!r} is not one of {', '.join(EXEC_API_VERSIONS)}"
        )
    args = body.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise KubeconfigError(f"{where}.args: not a list of strings")
    env: list[tuple[str, str]] = []
    for index, item in enumerate(body.get("env") or []):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise KubeconfigError(f"{where}.env[{index}]: needs a name and a value")
        env.append((item["name"], str(item.get("value", ""))))
    return ExecPlugin(
        command=command,
        args=tuple(args),
        env=tuple(env),
        api_version=str(api_version),
        provide_cluster_info=bool(body.get("provideClusterInfo", False)),
        install_hint=str(body.get("installHint") or ""),
    )
