"""An httpx2 client to the apiserver of a `ClusterConfig`: TLS as the kubeconfig says, and
credentials that stay valid as they rotate.

Tokens are sent as `Authorization: Bearer`. A token file (the in-cluster ServiceAccount's
projected token, which the kubelet replaces before it expires) is re-read every minute and
after a 401, as client-go does. An exec credential plugin is run when its token is first
needed, again once the token's `expirationTimestamp` is near, and again after a 401.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2

from kube_http.kubeconfig import ClusterConfig, ExecPlugin, KubeconfigError

TOKEN_FILE_REREAD_S = 60.0
EXEC_EXPIRY_MARGIN_S = 10.0
EXEC_TIMEOUT_S = 60.0


def ssl_context(config: ClusterConfig) -> ssl.SSLContext:
    """The TLS settings of `config`: its CA (else the system's), its client certificate."""
    # Trusting the kubeconfig's CA alone, as kubectl does; the system's only without one.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    where = f"kubeconfig {config.source}"
    try:
        if config.insecure_skip_tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif config.ca_data is not None:
            context.load_verify_locations(cadata=config.ca_data.decode("ascii", "replace"))
        elif config.ca_file is not None:
            context.load_verify_locations(cafile=str(config.ca_file))
        else:
            context.load_default_certs()
    except (ssl.SSLError, ValueError, OSError) as e:
        what = (
            "certificate-authority-data"
            if config.ca_data is not None
            else f"certificate-authority {config.ca_file}"
        )
        raise KubeconfigError(f"{where}: the cluster's {what}: {_reason(e)}") from e
    try:
        if config.client_cert_file is not None and config.client_key_file is not None:
            context.load_cert_chain(str(config.client_cert_file), str(config.client_key_file))
        elif config.client_cert_data is not None and config.client_key_data is not None:
            _load_inline_cert_chain(context, config.client_cert_data, config.client_key_data)
    except (ssl.SSLError, ValueError, OSError) as e:
        what = (
            f"client-certificate {config.client_cert_file} / client-key {config.client_key_file}"
            if config.client_cert_file is not None
            else "client-certificate-data / client-key-data"
        )
        raise KubeconfigError(f"{where}: the user's {what}: {_reason(e)}") from e
    return context


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _load_inline_cert_chain(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """`ssl` loads a certificate chain from files only: write both to one private file, load
    it, and remove it at once."""
    import tempfile  # only here: with shutil, bz2 and lzma behind it, about 1 MiB

    descriptor, name = tempfile.mkstemp(prefix="fleetbus-client-", suffix=".pem")
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(cert.rstrip(b"\n") + b"\n" + key)
        context.load_cert_chain(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


class _ExecCredential:
    """A token from an exec credential plugin, kept until shortly before it expires."""

    def __init__(self, plugin: ExecPlugin, config: ClusterConfig) -> None:
        self._plugin = plugin
        self._config = config
        self._token: str | None = None
        self._expires: float | None = None
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._token = None

    async def token(self) -> str:
        async with self._lock:
            fresh = self._expires is None or time.time() < self._expires - EXEC_EXPIRY_MARGIN_S
            if self._token is not None and fresh:
                return self._token
            self._token, self._expires = await self._run()
            return self._token

    async def _run(self) -> tuple[str, float | None]:
        plugin = self._plugin
        where = f"kubeconfig {self._config.source}: exec plugin {plugin.command!r}"
        spec: dict[str, object] = {"interactive": False}
        if plugin.provide_cluster_info:
            cluster: dict[str, object] = {"server": self._config.server}
            if self._config.ca_data is not None:
                cluster["certificate-authority-data"] = base64.b64encode(
                    self._config.ca_data
                ).decode()
            if self._config.insecure_skip_tls_verify:
                cluster["insecure-skip-tls-verify"] = True
            spec["cluster"] = cluster
        info = {"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": spec}
        env = {**os.environ, **dict(plugin.env), "KUBERNETES_EXEC_INFO": json.dumps(info)}
        try:
            process = await asyncio.create_subprocess_exec(
                plugin.command,
                *plugin.args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            hint = f" ({plugin.install_hint.strip()})" if plugin.install_hint else ""
            raise KubeconfigError(f"{where}: cannot run it: {e.strerror or e}{hint}") from e
        try:
            async with asyncio.timeout(EXEC_TIMEOUT_S):
                out, err = await process.communicate()
        except TimeoutError as e:
            process.kill()
            await process.wait()
            raise KubeconfigError(f"{where}: no answer within {EXEC_TIMEOUT_S:.0f}s") from e
        if process.returncode != 0:
            detail = err.decode(errors="replace").strip()[-300:]
            raise KubeconfigError(f"{where}: exited with {process.returncode}: {detail}")
        try:
            credential = json.loads(out)
        except ValueError as e:
            raise KubeconfigError(f"{where}: its output is not an ExecCredential (JSON)") from e
        if not isinstance(credential, dict) or credential.get("kind") != "ExecCredential":
            raise KubeconfigError(f"{where}: its output is not an ExecCredential")
        if credential.get("apiVersion") != plugin.api_version:
            raise KubeconfigError(
                f"{where}: answered apiVersion {credential.get('apiVersion')!r}, "
                f"asked for {plugin.api_version}"
            )
        status = credential.get("status") or {}
        token = status.get("token") if isinstance(status, dict) else None
        if not isinstance(token, str) or not token:
            if isinstance(status, dict) and status.get("clientCertificateData"):
                raise KubeconfigError(
                    f"{where}: answered with a client certificate; only token credentials "
                    "are supported"
                )
            raise KubeconfigError(f"{where}: its ExecCredential has no status.token")
        expires = None
        stamp = status.get("expirationTimestamp")
        if stamp:
            try:
                parsed = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            except ValueError as e:
                raise KubeconfigError(
                    f"{where}: status.expirationTimestamp {stamp!r} is not RFC 3339"
                ) from e
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            expires = parsed.timestamp()
        return token, expires


class _TokenFile:
    """A token file, re-read every `TOKEN_FILE_REREAD_S` and after a 401."""

    def __init__(self, path: Path, source: str) -> None:
        self._path = path
        self._source = source
        self._token: str | None = None
        self._read_at = 0.0

    def invalidate(self) -> None:
        self._token = None

    async def token(self) -> str:
        now = time.monotonic()
        if self._token is None or now - self._read_at >= TOKEN_FILE_REREAD_S:
            try:
                token = self._path.read_text().strip()
            except OSError as e:
                raise KubeconfigError(
                    f"kubeconfig {self._source}: token file {self._path}: {e.strerror or e}"
                ) from e
            if not token:
                raise KubeconfigError(
                    f"kubeconfig {self._source}: token file {self._path} is empty"
                )
            self._token, self._read_at = token, now
        return self._token


class _StaticToken:
    def __init__(self, token: str) -> None:
        self._token = token

    def invalidate(self) -> None:
        pass

    async def token(self) -> str:
        return self._token


class CredentialUnavailable(httpx2.TransportError, KubeconfigError):
    """A request's credential could not be had now (its token file unreadable, its exec
    plugin failing): to the adapters a transport failure, retried with backoff like an
    unreachable apiserver, since a mounted file or a plugin's login may come back."""


class BearerAuth(httpx2.Auth):
    """`Authorization: Bearer` from a token source; on a 401, the source is read again once
    (a rotated file, a fresh exec credential) and the request repeated."""

    def __init__(self, source: _StaticToken | _TokenFile | _ExecCredential) -> None:
        self._source = source

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        request.headers["Authorization"] = f"Bearer {await self._token(request)}"
        response = yield request
        if response.status_code == 401 and not isinstance(self._source, _StaticToken):
            self._source.invalidate()
            await response.aread()
            request.headers["Authorization"] = f"Bearer {await self._token(request)}"
            yield request

    async def _token(self, request: httpx2.Request) -> str:
        try:
            return await self._source.token()
        except KubeconfigError as e:
            raise CredentialUnavailable(str(e), request=request) from e


def auth_of(config: ClusterConfig) -> httpx2.Auth | None:
    """How requests of `config` authenticate (a client certificate is in `ssl_context`)."""
    if config.exec_plugin is not None:
        return BearerAuth(_ExecCredential(config.exec_plugin, config))
    if config.token_file is not None and config.token is None:
        return BearerAuth(_TokenFile(config.token_file, config.source))
    if config.token is not None:
        return BearerAuth(_StaticToken(config.token))
    if config.username is not None and config.password is not None:
        return httpx2.BasicAuth(config.username, config.password)
    return None


def connect(config: ClusterConfig, *, timeout: httpx2.Timeout) -> httpx2.AsyncClient:
    """An HTTP client to `config`'s apiserver; the caller closes it. Proxies come from the
    environment (`HTTPS_PROXY`, `NO_PROXY`), as for kubectl."""
    hooks: dict[str, list[Any]] = {}
    server_name = config.tls_server_name
    if server_name:

        async def name_the_server(request: httpx2.Request) -> None:
            # The name sent in the TLS handshake and checked against the certificate.
            request.extensions["sni_hostname"] = server_name

        hooks["request"] = [name_the_server]
    return httpx2.AsyncClient(
        base_url=config.server,
        verify=ssl_context(config),
        auth=auth_of(config),
        timeout=timeout,
        event_hooks=hooks,
    )
