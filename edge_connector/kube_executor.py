"""The Kubernetes executor: each ClusterTask becomes Step and Task resources for the controller.

The connector never touches the objects of a taskset itself. It writes what the cluster
controller (`fleetbus controller`) reconciles and reads back what the controller reports:

* `apply` server-side applies one Step resource per object of the taskset (each holds exactly
  one object, so no resource grows past etcd's ~1.5 MB limit however large the taskset), then
  the Task naming them phase by phase, and waits until the Task's status describes this
  generation: Ready (→ `TaskApplied`) or Failed (→ `TaskFailed`, naming phase, object and
  reason).
* `remove` deletes the Task; the controller's finalizer runs preDelete and deletes the objects;
  the call returns once the Task is gone.
* `drift` follows the Steps: each new drift detection the controller counted in a Step's status
  comes out once as a `DriftObserved` (the connector turns it into `DriftDetected` and, under
  policy `correct`, waits through `apply` for the correction: `DriftCorrected`). What was
  reported is remembered on the Step itself, so a restarted connector neither repeats nor loses
  observations.
* `inventory` reads the Tasks' statuses: what is applied, and a digest of it; and the cluster
  controller's heartbeat Leases, so its health reaches the hub with the connector's.

The contract with the controller is the CRDs in `cluster_controller/crds/` and their types in
`kube_contract` (resource identities, labels, the statuses read back here, decoded as typed
Structs); this module does not import the controller (components never import each other).
It is the connector's only module that speaks to the apiserver: plain REST on plain dicts
(`ApiClient`), over the HTTP client `kube_http` makes from the kubeconfig.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx2 as httpx
import msgspec
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from edge_connector.errors import ApplyFailed, ConnectorError, KubeTransient
from edge_connector.executor import AppliedTask, ApplyResult, DriftObserved, ExecutorInventory
from edge_connector.health import controller_status as judge_controller
from events.inventory import ControllerStatus
from kube_contract.controller_status import (
    LABEL_CONTROLLER_STATUS,
    ReplicaHeartbeat,
    read_heartbeat,
)
from kube_contract.errors import UnreadableResource
from kube_contract.model import (
    API_VERSION,
    LABEL_GENERATION,
    LABEL_MANAGED_BY,
    LABEL_TASK,
    MANAGED_BY,
    read_step_view,
    read_task_view,
)
from kube_contract.resources import LEASE, STEP, TASK, ResourceInfo
from kube_http.client import connect as connect_http
from kube_http.connections import close_interrupted_handshakes, keep_idle_connections
from kube_http.kubeconfig import KubeconfigError, load_config
from taskset.capabilities import ApiResource, ClusterCapabilities, capabilities_of
from taskset.digest import digest_of
from taskset.model import PHASES, ClusterTask, ObjectRef, Phase, Step

log = logging.getLogger(__name__)

TaskResource = TASK
StepResource = STEP
LeaseResource = LEASE

FIELD_MANAGER = "fleetbus-connector"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
WATCH_TIMEOUT_S = 300
"""How long one watch request runs before the apiserver ends it and it is renewed."""
DEFAULT_NAMESPACE = "fleetbus-system"
LABEL_CLUSTER = "fleetbus.io/cluster"
DRIFT_REPORTED = "fleetbus.io/drift-reported"
"""Annotation on a Step: how many of its drift detections the connector has passed on."""
MAX_NAME = 63
FIRST_BACKOFF = 0.25
"""The first pause after a transient failure; it doubles (with jitter) from there."""
MAX_BACKOFF = 30.0
"""The longest pause between two attempts to list or watch again."""
APPLY_ATTEMPTS = 6
"""A write answered with a transient error is tried this often (about 8 s) before it fails."""
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
"""Answers that say "not now" rather than "no": 429 comes, among others, from a CRD whose
storage is still initializing right after it was created."""
RETRYABLE = (KubeTransient,)
REQUEST_TIMEOUT = 30.0
"""Seconds a request (a watch: its connection) may take before it counts as failed."""
"""What list, watch and write loops retry; everything else is an answer to act on."""
IDLE_CONNECTION_S = 60.0
"""How long an idle connection to the apiserver is kept for the next request (the apiserver
keeps it 90 s)."""


# --- the resources written for a ClusterTask (pure) ---------------------------------------------


def step_name(taskset: str, phase: Phase, ref: ObjectRef) -> str:
    """A Step's name: stable for the same object in the same phase, across taskset versions."""
    identity = f"{phase}|{ref.api_version}|{ref.kind}|{ref.namespace}|{ref.name}"
    suffix = hashlib.sha256(identity.encode()).hexdigest()[:10]
    head = taskset[: MAX_NAME - len(suffix) - 1].rstrip("-")
    return f"{head}-{suffix}"


class TaskResources(msgspec.Struct, frozen=True, kw_only=True):
    task: dict[str, Any]
    steps: list[dict[str, Any]]


def _labels(task: ClusterTask) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_TASK: task.taskset_name,
        LABEL_CLUSTER: task.cluster,
    }


def _step_spec(task: str, phase: Phase, step: Step, *, adopt: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"task": task, "phase": phase, "object": step.object, "wait": step.wait}
    if step.job is not None:
        spec["job"] = {"apiVersion": "batch/v1", "kind": "Job", **step.job}
    if step.hook is not None:
        spec["hook"] = msgspec.to_builtins(step.hook)
    if step.drift_policy is not None:
        spec["driftPolicy"] = step.drift_policy
    if step.ignore_paths:
        spec["ignorePaths"] = list(step.ignore_paths)
    if step.adopt or adopt:
        spec["adopt"] = True
    return spec


def task_resources(task: ClusterTask, namespace: str) -> TaskResources:
    """The Task and its Steps for a ClusterTask, as manifests to server-side apply.

    Taskset phases map onto the Task as: init → `.spec.init` (run before the Tasklet exists),
    install and postInstall → the Tasklet template, preDelete → `.spec.preDelete`.
    """
    taskset = task.taskset
    if taskset is None:
        raise ApplyFailed(phase="init", object="-", reason="the ClusterTask carries no taskset")
    name = task.taskset_name
    names: dict[Phase, list[str]] = {phase: [] for phase in PHASES}
    steps: list[dict[str, Any]] = []
    for phase, step in taskset.steps():
        step_id = step_name(name, phase, step.ref)
        if step_id in names[phase]:
            raise ApplyFailed(
                phase=phase, object=str(step.ref), reason="the object appears twice in the phase"
            )
        names[phase].append(step_id)
        steps.append(
            {
                "apiVersion": API_VERSION,
                "kind": "Step",
                "metadata": {
                    "name": step_id,
                    "namespace": namespace,
                    "labels": {**_labels(task), LABEL_GENERATION: str(task.generation)},
                },
                "spec": _step_spec(name, phase, step, adopt=taskset.adopt),
            }
        )
    manifest = {
        "apiVersion": API_VERSION,
        "kind": "Task",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": _labels(task),
            "annotations": {"fleetbus.io/overrides": ",".join(task.overrides)},
        },
        "spec": {
            "taskset": name,
            "version": task.version,
            "generation": task.generation,
            "digest": task.digest,
            "namespace": taskset.namespace,
            "driftPolicy": taskset.drift_policy,
            "ignorePaths": list(taskset.ignore_paths),
            "init": names["init"],
            "template": {
                "spec": {"install": names["install"], "postInstall": names["postInstall"]}
            },
            "preDelete": names["preDelete"],
        },
    }
    return TaskResources(task=manifest, steps=steps)


def written_for(obj: Mapping[str, Any], task: ClusterTask) -> bool:
    """Whether a Task resource was written for exactly this ClusterTask: the same generation
    and digest (its Steps were written before it), and it is not being deleted."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    return (
        not metadata.get("deletionTimestamp")
        and spec.get("generation") == task.generation
        and spec.get("digest") == task.digest
    )


# --- reading the controller's answer (pure) ----------------------------------------------------

Verdict = Literal["ready", "failed", "pending"]


class TaskReading(msgspec.Struct, frozen=True, kw_only=True):
    verdict: Verdict
    phase: str = ""
    object: str = ""
    reason: str = ""
    objects: int = 0


def read_task(
    obj: Mapping[str, Any] | None, *, generation: int, digest: str, wait_for_correction: bool
) -> TaskReading:
    """Whether a Task's status answers for `generation`/`digest`, and what it says."""
    if obj is None:
        return TaskReading(verdict="pending", reason="the Task does not exist")
    try:
        status = read_task_view(obj).status
    except UnreadableResource as e:
        return TaskReading(verdict="pending", reason=f"the Task's status is unreadable: {e}")
    if status.observed_generation < generation or status.digest != digest:
        return TaskReading(verdict="pending", reason="the controller has not seen this version")
    phase = status.current_phase
    message = status.message
    if status.phase == "Failed":
        reason = status.reason or "Failed"
        return TaskReading(
            verdict="failed",
            phase=phase or "install",
            object=status.failed_object or status.failed_step or "-",
            reason=f"{reason}: {message}" if message else reason,
        )
    if status.phase == "Ready" and not (
        wait_for_correction and status.drift.drifted > status.drift.reported
    ):
        return TaskReading(verdict="ready", objects=status.objects)
    return TaskReading(verdict="pending", phase=phase, reason=message or "in progress")


def drift_observation(step: Mapping[str, Any]) -> DriftObserved | None:
    """A Step's newest drift detection if the connector has not passed it on yet."""
    try:
        view = read_step_view(step)
    except UnreadableResource as e:
        log.warning("skipping a Step whose drift cannot be read: %s", e)
        return None
    drift = view.status.drift
    reported = int(view.metadata.annotations.get(DRIFT_REPORTED) or 0)
    if drift.detected <= reported:
        return None
    written = ObjectRef.of(view.spec.object)
    ref = view.status.object
    obj = ObjectRef(
        api_version=ref.api_version if ref else written.api_version,
        kind=ref.kind if ref else written.kind,
        name=ref.name if ref else written.name,
        namespace=ref.namespace if ref else "",
    )
    try:
        observed_at = datetime.fromisoformat(drift.last_detected_at.replace("Z", "+00:00"))
    except ValueError:
        observed_at = datetime.now(UTC)
    return DriftObserved(
        taskset=view.spec.task,
        object=str(obj),
        fields=list(drift.fields),
        deleted=drift.deleted,
        policy=view.spec.drift_policy,
        ignore_paths=list(view.spec.ignore_paths),
        observation=f"{view.metadata.uid}#{drift.detected}",
        observed_at=observed_at,
    )


def applied_tasks(tasks: Sequence[Mapping[str, Any]]) -> dict[str, AppliedTask]:
    """Tasks whose status is Ready for their current spec, by taskset name."""
    applied = {}
    for obj in tasks:
        try:
            task = read_task_view(obj)
        except UnreadableResource as e:
            log.warning("skipping a Task whose status cannot be read: %s", e)
            continue
        status = task.status
        if status.phase != "Ready" or status.observed_generation < task.metadata.generation:
            continue
        applied[task.spec.taskset] = AppliedTask(
            generation=status.generation,
            digest=status.digest,
            version=status.version,
            objects=status.objects,
        )
    return applied


# --- the cluster's capabilities (pure) ----------------------------------------------------------

DISCOVERY_ACCEPT = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
    "application/json"
)
"""Aggregated discovery: every group, version, kind and scope in one answer per root."""
CAPABILITIES_TTL_S = 300.0
"""How long discovered capabilities are reused before the apiserver is asked again."""


def resources_from_discovery(document: Mapping[str, Any]) -> list[ApiResource]:
    """The kinds in an aggregated discovery document (`APIGroupDiscoveryList`) of `/api` or
    `/apis`; subresources are not kinds. Anything else (an older apiserver's plain group
    list) gives nothing."""
    if document.get("kind") != "APIGroupDiscoveryList":
        return []
    found: list[ApiResource] = []
    for group in document.get("items") or []:
        name = str((group.get("metadata") or {}).get("name") or "")
        for version in group.get("versions") or []:
            group_version = f"{name}/{version.get('version')}" if name else version.get("version")
            for resource in version.get("resources") or []:
                kind = (resource.get("responseKind") or {}).get("kind")
                if not kind or not group_version:
                    continue
                found.append(
                    ApiResource(
                        group_version=str(group_version),
                        kind=str(kind),
                        namespaced=resource.get("scope") == "Namespaced",
                    )
                )
    return found


# --- the executor ------------------------------------------------------------------------------


class Listing:
    """The objects of one list call (every page), then the list's resourceVersion to watch
    from, set once they have all been read."""

    def __init__(self, pages: AsyncIterator[dict[str, Any]]) -> None:
        self._pages = pages
        self.resourceVersion = ""

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._items()

    async def _items(self) -> AsyncIterator[dict[str, Any]]:
        async for page in self._pages:
            for item in page.get("items") or []:
                yield item
            self.resourceVersion = self.resourceVersion or str(
                (page.get("metadata") or {}).get("resourceVersion") or ""
            )


def _raise_for_status(response: httpx.Response) -> None:
    """The answer's error as `httpx.HTTPStatusError` (its body read, for the message)."""
    if response.status_code >= 400:
        raise httpx.HTTPStatusError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}",
            request=response.request,
            response=response,
        )


class ApiClient:
    """Plain REST on plain dicts for the few kinds the executor reads and writes; every
    refusal is an `httpx.HTTPStatusError` (the apiserver's Status in its body), every
    connection failure an `httpx.TransportError`."""

    def __init__(self, http: httpx.AsyncClient, *, namespace: str | None = None) -> None:
        self.http = http
        self.namespace = namespace
        """The kubeconfig context's namespace, if it names one."""

    @classmethod
    def from_kubeconfig(
        cls,
        kubeconfig: Path | None,
        *,
        context: str | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> ApiClient:
        try:
            config = load_config(kubeconfig, context)
            http = connect_http(config, timeout=httpx.Timeout(request_timeout))
        except KubeconfigError as e:
            raise ConnectorError(str(e)) from e
        return cls(http, namespace=config.namespace)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        content = None
        if body is not None:
            content = orjson.dumps(body)
            headers["Content-Type"] = content_type
        response = await self.http.request(
            method, path, params=dict(params or {}), content=content, headers=headers
        )
        _raise_for_status(response)
        document = orjson.loads(response.content) if response.content else {}
        return document if isinstance(document, dict) else {}

    @staticmethod
    def _selector(labels: Mapping[str, str] | None) -> dict[str, str]:
        if not labels:
            return {}
        return {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())}

    def list(
        self,
        resource: ResourceInfo,
        *,
        namespace: str = "",
        labels: Mapping[str, str] | None = None,
        limit: int = 500,
    ) -> Listing:
        async def pages() -> AsyncIterator[dict[str, Any]]:
            params = {"limit": str(limit), **self._selector(labels)}
            while True:
                page = await self._send("GET", resource.path(namespace), params=params)
                yield page
                token = (page.get("metadata") or {}).get("continue")
                if not token:
                    return
                params["continue"] = str(token)

        return Listing(pages())

    async def watch(
        self,
        resource: ResourceInfo,
        *,
        namespace: str = "",
        labels: Mapping[str, str] | None = None,
        resource_version: str,
        server_timeout: int = WATCH_TIMEOUT_S,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Every change from `resource_version` on, as (ADDED|MODIFIED|DELETED, object), for
        ever: a watch the apiserver ends is renewed from the last version seen (bookmarks
        included). An expired version (410) is raised as an `HTTPStatusError`: list again."""
        version = resource_version
        timeout = httpx.Timeout(REQUEST_TIMEOUT, read=server_timeout + REQUEST_TIMEOUT)
        while True:
            params = {
                "watch": "true",
                "allowWatchBookmarks": "true",
                "resourceVersion": version,
                "timeoutSeconds": str(server_timeout),
                **self._selector(labels),
            }
            async with self.http.stream(
                "GET",
                resource.path(namespace),
                params=params,
                headers={"Accept": "application/json"},
                timeout=timeout,
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for_status(response)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        event = orjson.loads(line)
                    except orjson.JSONDecodeError as e:
                        # A broken stream, to the callers like a cut connection: watch again.
                        raise httpx.ReadError(
                            f"undecodable watch event: {line[:100]!r}", request=response.request
                        ) from e
                    if not isinstance(event, dict):
                        continue
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        code = int(obj.get("code") or 500)
                        _raise_for_status(
                            httpx.Response(
                                code, content=orjson.dumps(obj), request=response.request
                            )
                        )
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        yield kind, obj

    async def apply(
        self,
        manifest: Mapping[str, Any],
        *,
        info: ResourceInfo,
        field_manager: str,
        force: bool = True,
    ) -> dict[str, Any]:
        metadata = manifest.get("metadata") or {}
        params = {"fieldManager": field_manager}
        if force:
            params["force"] = "true"
        path = info.path(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        return await self._send(
            "PATCH", path, params=params, body=dict(manifest), content_type=APPLY_PATCH
        )

    async def patch(
        self, resource: ResourceInfo, name: str, patch: Any, *, namespace: str = ""
    ) -> dict[str, Any]:
        return await self._send(
            "PATCH", resource.path(namespace, name), body=patch, content_type=MERGE_PATCH
        )

    async def delete(self, resource: ResourceInfo, name: str, *, namespace: str = "") -> None:
        await self._send("DELETE", resource.path(namespace, name))

    async def close(self) -> None:
        await self.http.aclose()


def _plain(resource: Any) -> dict[str, Any]:
    """An object as the plain dict the apiserver sent."""
    return dict(resource)


_KEPT_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp")
_KEPT_SPEC = ("taskset", "version", "generation", "digest")
_STATUS_NOISE = frozenset({"conditions", "release"})


def _kept(resource: Any) -> dict[str, Any]:
    """A Task as the executor keeps it: what readiness, inventory and the written-for check
    read. Left out: managedFields and the rest of the metadata, the spec's lists of Steps, the
    status's conditions and release history (the controller keeps the whole Task)."""
    obj = dict(resource)
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    kept: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: metadata[k] for k in _KEPT_METADATA if k in metadata},
        "spec": {k: spec[k] for k in _KEPT_SPEC if k in spec},
    }
    if isinstance(status, dict):
        kept["status"] = {k: v for k, v in status.items() if k not in _STATUS_NOISE}
    return kept


def _status(e: httpx.HTTPStatusError) -> dict[str, Any] | None:
    """The apiserver's Status in an error answer, if the body is one."""
    try:
        body = orjson.loads(e.response.content)
    except (orjson.JSONDecodeError, httpx.ResponseNotRead):
        return None
    return body if isinstance(body, dict) and body.get("kind") == "Status" else None


def _status_code(e: httpx.HTTPStatusError) -> int:
    return e.response.status_code


def is_transient(e: BaseException) -> bool:
    """Whether an HTTP error is a passing condition of the apiserver."""
    if isinstance(e, httpx.HTTPStatusError):
        return _status_code(e) in TRANSIENT_STATUS
    return isinstance(e, httpx.TransportError)


def is_kind_not_served(e: httpx.HTTPStatusError) -> bool:
    """A 404 about the resource type itself: the Task or Step CRD is not served yet, as right
    before or after the controller creates it. The apiserver answers that with a plain-text
    "404 page not found"; a 404 about an object (its namespace, say) is a JSON Status naming
    the object in its details."""
    if _status_code(e) != 404:
        return False
    status = _status(e)
    if status is None:
        return True
    return not (status.get("details") or {}).get("name")


def _error_message(e: httpx.HTTPStatusError) -> str:
    status = _status(e)
    if status is not None and status.get("message"):
        return str(status["message"])
    try:
        text = e.response.text.strip()[:200]
    except httpx.ResponseNotRead:
        text = ""
    return text or e.response.reason_phrase


def as_transient(e: httpx.HTTPStatusError | httpx.TransportError, what: str) -> KubeTransient:
    if isinstance(e, httpx.HTTPStatusError):
        return KubeTransient(f"{what}: apiserver answered {_status_code(e)}: {_error_message(e)}")
    return KubeTransient(f"{what}: Kubernetes API unreachable: {e!r}")


def _log_retry(state: RetryCallState) -> None:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.warning("%s; again in %.1fs", error, wait)


def watch_retrying() -> AsyncRetrying:
    """Retries for a list-then-watch loop: forever, backing off up to MAX_BACKOFF."""
    return AsyncRetrying(
        retry=retry_if_exception_type(RETRYABLE),
        wait=wait_exponential_jitter(
            multiplier=FIRST_BACKOFF, max=MAX_BACKOFF, jitter=FIRST_BACKOFF
        ),
        before_sleep=_log_retry,
        reraise=True,
    )


def write_retrying() -> AsyncRetrying:
    """Retries for one write: a few attempts, then the transient error is the answer."""
    return AsyncRetrying(
        retry=retry_if_exception_type(RETRYABLE),
        wait=wait_exponential_jitter(multiplier=FIRST_BACKOFF, max=4.0, jitter=FIRST_BACKOFF),
        stop=stop_after_attempt(APPLY_ATTEMPTS),
        before_sleep=_log_retry,
        reraise=True,
    )


class SharedTasks(Protocol):
    """The Tasks of the executor's namespace as another component of the same process keeps
    them: in `fleetbus edge`, the cluster controller's Task informer, which outlives the
    controller's restarts. Reads return fresh copies; whoever feeds it calls the executor's
    `tasks_changed()` on every change."""

    @property
    def synced(self) -> asyncio.Event:
        """Set once every Task has been listed."""
        ...

    def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def items(self) -> list[dict[str, Any]]: ...


class KubernetesExecutor:
    """Writes Task and Step resources; reads their status. See the module docstring."""

    def __init__(
        self,
        client: ApiClient,
        *,
        cluster: str,
        namespace: str = DEFAULT_NAMESPACE,
        apply_timeout: float = 900.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.cluster = cluster
        self.namespace = namespace
        self.apply_timeout = apply_timeout
        self.clock = clock
        self.shared_tasks: SharedTasks | None = None
        """Set (before the first call) to read the Tasks from a cache shared with the cluster
        controller instead of watching them here: one watch and one copy of them per process."""
        self.local_heartbeats: Callable[[datetime], list[ReplicaHeartbeat]] | None = None
        """Set when the cluster controller runs in this process (`fleetbus edge`): its
        heartbeat as its Lease would say it at that moment, read in the process instead of
        listing the heartbeat Leases from the apiserver every time readiness is checked."""
        self._tasks: dict[str, dict[str, Any]] = {}
        """This executor's own cache of its Tasks (`_kept`), without `shared_tasks`."""
        self._change = asyncio.Event()
        """Set (and replaced by a fresh one) on every change of the Tasks."""
        self._synced = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._watch_error = ""
        self._capabilities: ClusterCapabilities | None = None
        self._capabilities_at = 0.0
        self._leases: dict[str, dict[str, Any]] = {}
        """The controller's heartbeat Leases as last listed and watched (split layout)."""
        self._leases_synced = asyncio.Event()
        """Set while the Lease watch runs on a complete listing; cleared when it fails."""
        self._lease_watcher: asyncio.Task[None] | None = None

    @classmethod
    def from_kubeconfig(
        cls,
        kubeconfig: Path | None,
        *,
        cluster: str,
        namespace: str | None = None,
        apply_timeout: float = 900.0,
        request_timeout: float = REQUEST_TIMEOUT,
        context: str | None = None,
    ) -> KubernetesExecutor:
        """An executor on the kubeconfig's cluster.

        Tasks and Steps go to `namespace`, else to the kubeconfig context's namespace (the edge
        Helm chart sets its release namespace there), else to `fleetbus-system`.
        """
        client = ApiClient.from_kubeconfig(
            kubeconfig, context=context, request_timeout=request_timeout
        )
        chosen = namespace or client.namespace
        executor = cls(
            client,
            cluster=cluster,
            namespace=chosen or DEFAULT_NAMESPACE,
            apply_timeout=apply_timeout,
        )
        # Its HTTP client is also the cluster controller's in `fleetbus edge`: a request of
        # either component cancelled in its TLS handshake must not leave the connection open.
        close_interrupted_handshakes(executor.http_client)
        keep_idle_connections(executor.http_client, IDLE_CONNECTION_S)
        return executor

    # --- the executor port ---------------------------------------------------------------------

    async def apply(self, task: ClusterTask) -> ApplyResult:
        """Write the Steps and the Task, then wait for the controller's answer.

        A Task that already stands for exactly this ClusterTask (its generation and digest, not
        being deleted) is not written again: applying it once more (to correct a drift, which
        the controller has already corrected, or after a failure it retries by itself) only
        waits for the controller's answer, instead of rewriting every Step of the taskset."""
        started = time.monotonic()
        await self._ensure_watch()
        stored = self._task(task.taskset_name)
        if stored is None or not written_for(stored, task):
            resources = task_resources(task, self.namespace)
            for step in resources.steps:
                phase = str(step["spec"]["phase"])
                await self._apply(
                    StepResource,
                    step,
                    phase=phase,
                    obj=str(ObjectRef.of(step["spec"]["object"])),
                )
            stored = await self._apply(TaskResource, resources.task, phase="init", obj="Task")
        generation = int((stored.get("metadata") or {}).get("generation") or 0)
        taskset = task.taskset
        correct = taskset is not None and taskset.drift_policy == "correct"

        def reading() -> TaskReading:
            current = self._newer(self._task(task.taskset_name), stored)
            return read_task(
                current, generation=generation, digest=task.digest, wait_for_correction=correct
            )

        outcome = await self._wait(lambda: reading().verdict != "pending")
        result = reading()
        if result.verdict == "ready":
            return ApplyResult(objects=result.objects, duration_s=time.monotonic() - started)
        if result.verdict == "failed":
            raise ApplyFailed(phase=result.phase, object=result.object, reason=result.reason)
        raise ApplyFailed(
            phase=result.phase or "init",
            object=result.object or "-",
            reason=f"not ready after {self.apply_timeout:.0f}s: {result.reason}"
            if not outcome
            else result.reason,
        )

    async def remove(self, task: ClusterTask) -> ApplyResult:
        started = time.monotonic()
        await self._ensure_watch()
        name = task.taskset_name
        try:
            await self.client.delete(TaskResource, name, namespace=self.namespace)
        except httpx.HTTPStatusError as e:
            if _status_code(e) != 404:
                raise ApplyFailed(phase="preDelete", object="Task", reason=_error_message(e)) from e
        except httpx.TransportError as e:
            raise ApplyFailed(
                phase="preDelete", object="Task", reason=f"Kubernetes API unreachable: {e!r}"
            ) from e
        gone = await self._wait(lambda: self._task(name) is None)
        if not gone:
            status = (self._task(name) or {}).get("status") or {}
            raise ApplyFailed(
                phase="preDelete",
                object=str(status.get("failedObject") or "-"),
                reason=f"not removed after {self.apply_timeout:.0f}s: "
                f"{status.get('message') or 'waiting for the controller'}",
            )
        await self._delete_leftover_steps(name)
        return ApplyResult(objects=0, duration_s=time.monotonic() - started)

    async def inventory(self) -> ExecutorInventory:
        await self._ensure_watch()
        tasks = self._all_tasks()
        applied = applied_tasks(tasks)
        live = {
            str((t.get("spec") or {}).get("taskset")): {
                "digest": (t.get("status") or {}).get("digest", ""),
                "phase": (t.get("status") or {}).get("phase", ""),
                "drifted": ((t.get("status") or {}).get("drift") or {}).get("drifted", 0),
            }
            for t in tasks
        }
        objects = sum(int((t.get("status") or {}).get("objects") or 0) for t in tasks)
        return ExecutorInventory(
            applied=applied,
            live_digest=digest_of(live),
            objects=objects,
            capabilities=await self.capabilities(),
        )

    async def controller_status(self) -> ControllerStatus:
        """The cluster controller's health from its replicas' heartbeat Leases in this
        executor's namespace (`kube_contract.controller_status`), judged by
        `edge_connector.health.controller_status`; unreadable Leases are the reason.

        With `local_heartbeats` (the controller in this process), judged from those instead,
        without a request. Otherwise the Leases are watched, so each check judges what the
        watch holds (against the time now: a Lease not renewed turns stale by itself); until
        the watch has listed them, or while it fails, they are listed for the check, whose
        answer is then the reason."""
        now = self.clock()
        if self.local_heartbeats is not None:
            return judge_controller(self.local_heartbeats(now), now)
        if self._lease_watcher is None or self._lease_watcher.done():
            self._lease_watcher = asyncio.create_task(
                self._watch_leases(), name="kube-executor-leases"
            )
        if self._leases_synced.is_set():
            return judge_controller([read_heartbeat(lease) for lease in self._leases.values()], now)
        try:
            leases = [
                read_heartbeat(_plain(lease))
                async for lease in self.client.list(
                    LeaseResource,
                    namespace=self.namespace,
                    labels={LABEL_CONTROLLER_STATUS: "true"},
                )
            ]
        except httpx.HTTPStatusError as e:
            error = (
                f"listing Leases in {self.namespace} answered {_status_code(e)}: "
                f"{_error_message(e)}"
            )
            return judge_controller([], now, error=error)
        except httpx.TransportError as e:
            return judge_controller([], now, error=f"Kubernetes API unreachable: {e!r}")
        return judge_controller(leases, now)

    async def capabilities(self) -> ClusterCapabilities | None:
        """The cluster's capabilities from the apiserver's discovery, reused for
        `CAPABILITIES_TTL_S`; None (and a warning) when discovery cannot be read now."""
        now = time.monotonic()
        if self._capabilities is not None and now - self._capabilities_at < CAPABILITIES_TTL_S:
            return self._capabilities
        try:
            version = await self._discovery_get("/version", "application/json")
            resources = [
                *resources_from_discovery(await self._discovery_get("/api", DISCOVERY_ACCEPT)),
                *resources_from_discovery(await self._discovery_get("/apis", DISCOVERY_ACCEPT)),
            ]
        except (httpx.HTTPError, ValueError) as e:
            log.warning("cannot read the cluster's discovery: %s", e)
            return self._capabilities
        self._capabilities = capabilities_of(str(version.get("gitVersion") or ""), resources)
        self._capabilities_at = now
        return self._capabilities

    @property
    def http_client(self) -> httpx.AsyncClient:
        """The HTTP client of this executor: the kubeconfig's server, credentials and TLS
        settings, and one connection pool, which another component of the same process (the
        cluster controller in `fleetbus edge`) may share instead of opening its own."""
        return self.client.http

    async def _discovery_get(self, path: str, accept: str) -> dict[str, Any]:
        response = await self.http_client.get(path, headers={"Accept": accept})
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError(f"{path} answered with {type(document).__name__}, not an object")
        return document

    async def drift(self) -> AsyncGenerator[DriftObserved, None]:
        """Every new drift detection on this executor's Steps, once; forever.

        The Steps are followed by a background list-then-watch that survives what a starting
        or restarting apiserver answers (429, 5xx, a reset connection, the Step kind not
        served yet) and re-lists on 410; any other answer ends the iteration with an error.
        """
        found: asyncio.Queue[DriftObserved] = asyncio.Queue(maxsize=1)
        follower = asyncio.create_task(self._follow_steps(found), name="kube-executor-steps")
        getting: asyncio.Future[DriftObserved] | None = None
        try:
            while True:
                getting = asyncio.ensure_future(found.get())
                await asyncio.wait({getting, follower}, return_when=asyncio.FIRST_COMPLETED)
                if getting.done():
                    yield getting.result()
                    continue
                follower.result()  # raises the follower's error
                raise ConnectorError("watching Steps ended")  # it never returns by itself
        finally:
            waiting = [t for t in (getting, follower) if t is not None]
            for pending in waiting:
                pending.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)

    async def _follow_steps(self, found: asyncio.Queue[DriftObserved]) -> None:
        while True:
            async for attempt in watch_retrying():
                with attempt:
                    await self._follow_steps_once(found)

    async def _follow_steps_once(self, found: asyncio.Queue[DriftObserved]) -> None:
        """List the Steps and watch them until the watch ends; 410 ends it early (re-list)."""
        try:
            listing = self.client.list(
                StepResource, namespace=self.namespace, labels={LABEL_CLUSTER: self.cluster}
            )
            async for step in listing:
                observed = await self._observe_drift(_plain(step))
                if observed is not None:
                    await found.put(observed)
            async for _, step in self.client.watch(
                StepResource,
                namespace=self.namespace,
                labels={LABEL_CLUSTER: self.cluster},
                resource_version=listing.resourceVersion,
                server_timeout=300,
            ):
                observed = await self._observe_drift(_plain(step))
                if observed is not None:
                    await found.put(observed)
        except httpx.HTTPStatusError as e:
            if _status_code(e) == 410:
                return
            if is_transient(e) or is_kind_not_served(e):
                raise as_transient(e, "watching Steps") from e
            raise ConnectorError(f"watching Steps failed: {_error_message(e)}") from e
        except httpx.TransportError as e:
            raise as_transient(e, "watching Steps") from e

    async def _watch_leases(self) -> None:
        """List-then-watch the controller's heartbeat Leases for ever; re-list on 410 or
        when a watch ends; retry failures with bounded backoff (meanwhile checks list)."""
        while True:
            async for attempt in watch_retrying():
                with attempt:
                    await self._watch_leases_once()

    async def _watch_leases_once(self) -> None:
        try:
            listing = self.client.list(
                LeaseResource, namespace=self.namespace, labels={LABEL_CONTROLLER_STATUS: "true"}
            )
            fresh = {}
            async for item in listing:
                lease = _plain(item)
                fresh[str((lease.get("metadata") or {}).get("name"))] = lease
            self._leases = fresh
            self._leases_synced.set()
            async for event, item in self.client.watch(
                LeaseResource,
                namespace=self.namespace,
                labels={LABEL_CONTROLLER_STATUS: "true"},
                resource_version=listing.resourceVersion,
                server_timeout=300,
            ):
                lease = _plain(item)
                name = str((lease.get("metadata") or {}).get("name"))
                if event == "DELETED":
                    self._leases.pop(name, None)
                else:
                    self._leases[name] = lease
        except httpx.HTTPStatusError as e:
            self._leases_synced.clear()
            if _status_code(e) == 410:
                return
            raise as_transient(e, "watching the controller's heartbeat Leases") from e
        except httpx.TransportError as e:
            self._leases_synced.clear()
            raise as_transient(e, "watching the controller's heartbeat Leases") from e
        except BaseException:
            self._leases_synced.clear()
            raise

    async def close(self) -> None:
        for watcher in (self._watcher, self._lease_watcher):
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        self._watcher = self._lease_watcher = None
        await self.client.close()

    # --- internals -----------------------------------------------------------------------------

    async def _apply(
        self, resource: ResourceInfo, manifest: dict[str, Any], *, phase: str, obj: str
    ) -> dict[str, Any]:
        try:
            async for attempt in write_retrying():
                with attempt:
                    try:
                        stored = await self.client.apply(
                            manifest, info=resource, field_manager=FIELD_MANAGER, force=True
                        )
                    except (httpx.HTTPStatusError, httpx.TransportError) as e:
                        if is_transient(e) or (
                            isinstance(e, httpx.HTTPStatusError) and is_kind_not_served(e)
                        ):
                            raise as_transient(e, f"applying {obj}") from e
                        raise
        except httpx.HTTPStatusError as e:
            raise ApplyFailed(phase=phase, object=obj, reason=_error_message(e)) from e
        except KubeTransient as e:
            raise ApplyFailed(phase=phase, object=obj, reason=str(e)) from e
        return _plain(stored)

    async def _observe_drift(self, step: dict[str, Any]) -> DriftObserved | None:
        observed = drift_observation(step)
        if observed is None:
            return None
        detected = int((((step.get("status") or {}).get("drift")) or {}).get("detected") or 0)
        name = str(step["metadata"]["name"])
        try:
            await self.client.patch(
                StepResource,
                name,
                {"metadata": {"annotations": {DRIFT_REPORTED: str(detected)}}},
                namespace=self.namespace,
            )
        except httpx.HTTPStatusError as e:
            if _status_code(e) == 404:
                return None
            raise ConnectorError(
                f"cannot mark drift of Step {name} reported: {_error_message(e)}"
            ) from e
        return observed

    async def _delete_leftover_steps(self, task: str) -> None:
        try:
            async for step in self.client.list(
                StepResource, namespace=self.namespace, labels={LABEL_TASK: task}
            ):
                name = (step.get("metadata") or {}).get("name")
                if name:
                    await self.client.delete(StepResource, str(name), namespace=self.namespace)
        except httpx.HTTPStatusError as e:
            if _status_code(e) != 404:
                raise ApplyFailed(phase="preDelete", object="Step", reason=_error_message(e)) from e

    @staticmethod
    def _newer(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
        def version(obj: dict[str, Any] | None) -> int:
            try:
                return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
            except ValueError:
                return 0

        return a if a is not None and version(a) >= version(b) else b

    def _ours(self, obj: dict[str, Any] | None) -> bool:
        labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
        return bool(labels.get(LABEL_CLUSTER) == self.cluster)

    def _task(self, name: str) -> dict[str, Any] | None:
        """This executor's Task `name` as last seen, if any."""
        if self.shared_tasks is None:
            return self._tasks.get(name)
        obj = self.shared_tasks.get(self.namespace, name)
        return obj if self._ours(obj) else None

    def _all_tasks(self) -> list[dict[str, Any]]:
        """This executor's Tasks as last seen, by name."""
        if self.shared_tasks is None:
            return [self._tasks[name] for name in sorted(self._tasks)]
        found = [obj for obj in self.shared_tasks.items() if self._ours(obj)]
        return sorted(found, key=lambda obj: str((obj.get("metadata") or {}).get("name")))

    def tasks_changed(self) -> None:
        """Wake whoever waits for a Task to change (called for every watch event)."""
        changed, self._change = self._change, asyncio.Event()
        changed.set()

    async def _wait(self, done: Callable[[], bool]) -> bool:
        """Wait until `done()` holds after some Task change; False on the apply timeout."""
        try:
            async with asyncio.timeout(self.apply_timeout):
                while not done():
                    await self._change.wait()
        except TimeoutError:
            return False
        return True

    async def _ensure_watch(self) -> None:
        """Start following this executor's Tasks; fail if they cannot be listed in time."""
        if self.shared_tasks is not None:
            try:
                async with asyncio.timeout(self.apply_timeout):
                    await self.shared_tasks.synced.wait()
            except TimeoutError as e:
                raise ApplyFailed(
                    phase="init",
                    object="Task",
                    reason=f"the cluster controller of this process has not listed the Tasks in "
                    f"{self.namespace} within {self.apply_timeout:.0f}s (see its readiness)",
                ) from e
            return
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch_tasks(), name="kube-executor-tasks")
        try:
            async with asyncio.timeout(self.apply_timeout):
                await self._synced.wait()
        except TimeoutError as e:
            raise ApplyFailed(
                phase="init",
                object="Task",
                reason=f"cannot list Tasks in {self.namespace} (is the fleetbus controller "
                f"installed?): {self._watch_error or 'no answer'}",
            ) from e

    async def _watch_tasks(self) -> None:
        """List-then-watch this executor's Tasks for ever; re-list on 410.

        Every other failure is retried with bounded backoff: the transient ones (429, 5xx, a
        reset connection) and also a missing Task kind or a refusal, which an operator or the
        controller's start may repair; meanwhile `_ensure_watch` reports the last error.
        """
        while True:
            async for attempt in watch_retrying():
                with attempt:
                    await self._watch_tasks_once()

    async def _watch_tasks_once(self) -> None:
        try:
            listing = self.client.list(
                TaskResource, namespace=self.namespace, labels={LABEL_CLUSTER: self.cluster}
            )
            fresh = {}
            async for item in listing:
                obj = _kept(item)
                fresh[str(obj["metadata"]["name"])] = obj
            self._tasks = fresh
            self._synced.set()
            self.tasks_changed()
            async for event, item in self.client.watch(
                TaskResource,
                namespace=self.namespace,
                labels={LABEL_CLUSTER: self.cluster},
                resource_version=listing.resourceVersion,
                server_timeout=300,
            ):
                obj = _kept(item)
                name = str(obj["metadata"]["name"])
                if event == "DELETED":
                    self._tasks.pop(name, None)
                else:
                    self._tasks[name] = obj
                self.tasks_changed()
        except httpx.HTTPStatusError as e:
            if _status_code(e) == 410:
                return
            self._watch_error = _error_message(e)
            raise as_transient(e, "watching Tasks") from e
        except httpx.TransportError as e:
            self._watch_error = f"Kubernetes API unreachable: {e!r}"
            raise as_transient(e, "watching Tasks") from e
