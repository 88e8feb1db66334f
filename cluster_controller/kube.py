"""The Kubernetes adapter: the only module of the controller that speaks HTTP to the apiserver.

`kube_http` reads the kubeconfig (or the in-cluster ServiceAccount) and sets up TLS and the
credentials (tokens, token files, client certificates, exec plugins). The requests themselves
are plain REST on plain dicts, because the controller applies objects of any
kind, including kinds whose CRD it created a second ago, and owns its list-then-watch loop (the
clients' own 410 handling either gives up or restarts from scratch; see `informer`).

What this module guarantees:

* Every error leaves it as a `cluster_controller.errors` exception (`raise ... from e`).
* Transient failures (connection errors, 5xx, 429) are retried here with bounded backoff; a
  conflict, a rejection or a missing object never is.
* Server-side apply is `PATCH application/apply-patch+yaml` with one field manager and
  `force=true`; `dryRun=All` for drift confirmation.
* Kinds are resolved through discovery (`/api/v1`, `/apis/<group>/<version>`), cached per
  group-version and refreshed once on a miss, so a freshly Established CRD is found.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Literal

import httpx2 as httpx
import msgspec
import orjson
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from cluster_controller.errors import (
    Conflict,
    Forbidden,
    KubeApiError,
    KubeConfigError,
    KubeRejected,
    KubeUnavailable,
    NotFound,
    ResourceVersionExpired,
    UnknownKind,
)
from kube_contract.resources import ResourceInfo
from kube_http.client import connect as connect_http
from kube_http.connections import close_interrupted_handshakes
from kube_http.kubeconfig import ClusterConfig, KubeconfigError, load_config

log = logging.getLogger(__name__)

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

RETRY_ATTEMPTS = 5
REQUEST_TIMEOUT = 30.0

WatchType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]

_CONVERSION_FAILURE = "failed to convert new object"
"""How the apiserver answers (with a 500) a server-side apply whose values cannot be decoded
into the kind's type, e.g. a malformed quantity: the object is wrong, retrying cannot help."""


class WatchEvent(msgspec.Struct, frozen=True, kw_only=True):
    type: WatchType
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        return str((self.object.get("metadata") or {}).get("resourceVersion") or "")


class ObjectList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[dict[str, Any]]
    resource_version: str


class _RawWatchEvent(msgspec.Struct, frozen=True):
    type: str
    object: dict[str, Any]


_watch_decoder = msgspec.json.Decoder(_RawWatchEvent)


def _status_error(code: int, body: bytes, what: str) -> KubeApiError | KubeUnavailable:
    reason = ""
    message = ""
    try:
        status = orjson.loads(body) if body else {}
        if isinstance(status, dict):
            reason = str(status.get("reason") or "")
            message = str(status.get("message") or "")
    except orjson.JSONDecodeError:
        message = body[:200].decode(errors="replace")
    if code == 404:
        return NotFound(code, reason or "NotFound", message, what)
    if code == 409:
        return Conflict(code, reason or "Conflict", message, what)
    if code == 403:
        return Forbidden(code, reason or "Forbidden", message, what)
    if code == 410:
        return ResourceVersionExpired(code, reason or "Expired", message, what)
    if code in (400, 422) or (code == 500 and _CONVERSION_FAILURE in message):
        return KubeRejected(code, reason or "Invalid", message, what)
    if code == 429 or code >= 500:
        return KubeUnavailable(f"{what}: apiserver answered {code} {reason}: {message}".strip())
    return KubeApiError(code, reason or "Error", message, what)


def load_kubeconfig(path: Path | None = None, context: str | None = None) -> ClusterConfig:
    """A kubeconfig from `path`, else in-cluster ServiceAccount, else $KUBECONFIG/~/.kube/config."""
    try:
        return load_config(path, context)
    except KubeconfigError as e:
        raise KubeConfigError(str(e)) from e


class Kube:
    """An async client for one apiserver. Create with `Kube.connect(...)`, end with `close()`."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        config: ClusterConfig | None = None,
        user_agent: str = "fleetbus",
        owns_http: bool = True,
    ) -> None:
        self._http = http
        self._config = config
        self._user_agent = user_agent
        self._owns_http = owns_http
        self._discovery: dict[str, dict[str, ResourceInfo]] = {}
        self._discovery_lock = asyncio.Lock()

    @classmethod
    def connect(
        cls,
        kubeconfig: Path | None = None,
        *,
        context: str | None = None,
        user_agent: str = "fleetbus",
    ) -> Kube:
        return cls.from_config(load_kubeconfig(kubeconfig, context), user_agent=user_agent)

    @classmethod
    def from_config(cls, config: ClusterConfig, *, user_agent: str = "fleetbus") -> Kube:
        try:
            http = connect_http(config, timeout=httpx.Timeout(REQUEST_TIMEOUT))
        except KubeconfigError as e:
            raise KubeConfigError(str(e)) from e
        close_interrupted_handshakes(http)
        http.headers["User-Agent"] = user_agent
        return cls(http, config=config, user_agent=user_agent)

    @classmethod
    def sharing(cls, http: httpx.AsyncClient) -> Kube:
        """A client over the HTTP client (server, credentials, TLS, connection pool) of another
        component in the same process; that component closes it, `close()` here does not."""
        return cls(http, owns_http=False)

    def with_token(self, token: str) -> Kube:
        """A client to the same apiserver, trusting the same CA, authenticating with `token`."""
        if self._config is None:
            raise KubeConfigError("this client was not made from a kubeconfig")
        return Kube.from_config(self._config.with_token(token), user_agent=self._user_agent)

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # --- raw requests ------------------------------------------------------------------------

    async def _send_once(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        body: Any,
        content_type: str,
        headers: Mapping[str, str] | None,
        what: str,
    ) -> bytes:
        request_headers = {"Accept": "application/json"}
        if headers:
            request_headers.update(headers)
        content = None
        if body is not None:
            content = orjson.dumps(body)
            request_headers["Content-Type"] = content_type
        try:
            response = await self._http.request(
                method,
                path,
                params=dict(params or {}),
                content=content,
                headers=request_headers,
            )
        except httpx.TransportError as e:
            raise KubeUnavailable(f"{what}: cannot reach the apiserver: {e!r}") from e
        if response.status_code >= 400:
            raise _status_error(response.status_code, response.content, what)
        return response.content

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        what: str = "",
    ) -> dict[str, Any]:
        """One REST call, retried on transient failures; the decoded JSON answer."""
        what = what or f"{method} {path}"
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(KubeUnavailable),
            stop=stop_after_attempt(RETRY_ATTEMPTS),
            wait=wait_exponential(multiplier=0.2, max=5),
            reraise=True,
        ):
            with attempt:
                raw = await self._send_once(
                    method,
                    path,
                    params=params,
                    body=body,
                    content_type=content_type,
                    headers=headers,
                    what=what,
                )
        if not raw:
            return {}
        decoded = orjson.loads(raw)
        return decoded if isinstance(decoded, dict) else {"value": decoded}

    # --- discovery ---------------------------------------------------------------------------

    async def _discover(self, api_version: str) -> dict[str, ResourceInfo]:
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            listing = await self.request("GET", path, what=f"discovery of {api_version}")
        except NotFound:
            return {}
        kinds: dict[str, ResourceInfo] = {}
        for resource in listing.get("resources") or []:
            name = str(resource.get("name", ""))
            if not name or "/" in name:
                continue
            kinds[str(resource.get("kind"))] = ResourceInfo(
                group=group,
                version=version,
                kind=str(resource.get("kind")),
                plural=name,
                namespaced=bool(resource.get("namespaced")),
            )
        return kinds

    async def resource(self, api_version: str, kind: str) -> ResourceInfo:
        """How `kind` in `api_version` is served; `UnknownKind` if the apiserver has no such."""
        known = self._discovery.get(api_version)
        if known is not None and kind in known:
            return known[kind]
        async with self._discovery_lock:
            kinds = await self._discover(api_version)
            self._discovery[api_version] = kinds
        if kind not in kinds:
            raise UnknownKind(api_version, kind)
        return kinds[kind]

    async def resource_of(self, obj: Mapping[str, Any]) -> ResourceInfo:
        return await self.resource(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))

    # --- objects -----------------------------------------------------------------------------

    async def get(
        self, info: ResourceInfo, name: str, namespace: str = ""
    ) -> dict[str, Any] | None:
        try:
            return await self.request(
                "GET",
                info.path(namespace, name),
                what=f"get {info.kind} {namespace}/{name}",
            )
        except NotFound:
            return None

    async def list(
        self,
        info: ResourceInfo,
        *,
        namespace: str = "",
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 500,
    ) -> ObjectList:
        """Every matching object, paged, with the list's resourceVersion to watch from."""
        items: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": str(limit)}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        resource_version = ""
        while True:
            page = await self.request(
                "GET", info.path(namespace), params=params, what=f"list {info.plural}"
            )
            for item in page.get("items") or []:
                item.setdefault("apiVersion", info.api_version)
                item.setdefault("kind", info.kind)
                items.append(item)
            metadata = page.get("metadata") or {}
            resource_version = resource_version or str(metadata.get("resourceVersion") or "")
            token = metadata.get("continue")
            if not token:
                return ObjectList(items=items, resource_version=resource_version)
            params["continue"] = str(token)

    async def watch(
        self,
        info: ResourceInfo,
        *,
        resource_version: str,
        namespace: str = "",
        label_selector: str = "",
        timeout_seconds: int = 300,
    ) -> AsyncIterator[WatchEvent]:
        """One watch request from `resource_version`, with bookmarks, until the server ends it.

        An ERROR event with code 410 raises `ResourceVersionExpired` (re-list); any other ERROR
        raises its `KubeApiError`. The caller owns the loop around this.
        """
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        what = f"watch {info.plural}"
        timeout = httpx.Timeout(REQUEST_TIMEOUT, read=timeout_seconds + REQUEST_TIMEOUT)
        try:
            async with self._http.stream(
                "GET",
                info.path(namespace),
                params=params,
                headers={"Accept": "application/json"},
                timeout=timeout,
            ) as response:
                if response.status_code >= 400:
                    raise _status_error(response.status_code, await response.aread(), what)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    raw = _watch_decoder.decode(line)
                    if raw.type == "ERROR":
                        code = int(raw.object.get("code") or 500)
                        raise _status_error(code, orjson.dumps(raw.object), what)
                    if raw.type not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
                        continue
                    obj = raw.object
                    obj.setdefault("apiVersion", info.api_version)
                    obj.setdefault("kind", info.kind)
                    yield WatchEvent(type=raw.type, object=obj)  # type: ignore[arg-type]
        except httpx.TransportError as e:
            raise KubeUnavailable(f"{what}: watch interrupted: {e!r}") from e
        except msgspec.DecodeError as e:
            raise KubeUnavailable(f"{what}: undecodable watch event: {e}") from e

    async def apply(
        self,
        manifest: Mapping[str, Any],
        *,
        field_manager: str,
        force: bool = True,
        dry_run: bool = False,
        subresource: str = "",
        info: ResourceInfo | None = None,
    ) -> dict[str, Any]:
        """Server-side apply `manifest`; the object as stored (or as it would be, on dry-run)."""
        info = info or await self.resource_of(manifest)
        metadata = manifest.get("metadata") or {}
        name = str(metadata.get("name", ""))
        namespace = str(metadata.get("namespace") or "") if info.namespaced else ""
        params = {"fieldManager": field_manager}
        if force:
            params["force"] = "true"
        if dry_run:
            params["dryRun"] = "All"
        where = f"{namespace}/{name}" if namespace else name
        return await self.request(
            "PATCH",
            info.path(namespace, name, subresource),
            params=params,
            body=dict(manifest),
            content_type=APPLY_PATCH,
            what=f"apply {info.kind} {where}" + (" (dry run)" if dry_run else ""),
        )

    async def patch(
        self,
        info: ResourceInfo,
        name: str,
        patch: Any,
        *,
        namespace: str = "",
        subresource: str = "",
        patch_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        return await self.request(
            "PATCH",
            info.path(namespace, name, subresource),
            body=patch,
            content_type=patch_type,
            what=f"patch {info.kind} {namespace}/{name}{'/' + subresource if subresource else ''}",
        )

    async def create(
        self, info: ResourceInfo, body: Mapping[str, Any], *, namespace: str = ""
    ) -> dict[str, Any]:
        return await self.request(
            "POST", info.path(namespace), body=dict(body), what=f"create {info.kind}"
        )

    async def delete(
        self,
        info: ResourceInfo,
        name: str,
        *,
        namespace: str = "",
        propagation: str = "Background",
        uid: str = "",
    ) -> bool:
        """Delete an object; False if it was already gone. `uid` guards against a namesake."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": propagation,
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request(
                "DELETE",
                info.path(namespace, name),
                body=body,
                what=f"delete {info.kind} {namespace}/{name}",
            )
        except NotFound:
            return False
        except Conflict as e:
            if uid and "precondition" in e.api_message.lower():
                return False
            raise
        return True
