"""The Namespace reconciler: a namespace and its quota, limits, policies and RBAC as one.

A fleetbus Namespace (cluster-scoped, named like the namespace it makes) is applied whole on
every pass with server-side apply and force, so an edited or deleted part comes back on the
next event; parts the spec no longer lists are deleted (found by their owner label). Status
says which parts are ready. On deletion the parts go first, then the namespace itself; a
namespace that is terminating counts as gone (its own controller finishes the job).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from cluster_controller.errors import Conflict, ControllerError, KubeRejected, NotFound
from cluster_controller.informer import Informer
from cluster_controller.kstatus import compute_status
from cluster_controller.kube import Kube
from cluster_controller.manifests import namespace_parts
from cluster_controller.recorder import rfc3339
from cluster_controller.tasks import RETRY_CONFLICT, RETRY_TRANSIENT, Outcome
from kube_contract.model import (
    API_VERSION,
    FIELD_MANAGER,
    FINALIZER,
    LABEL_NAMESPACE_OWNER,
    NamespaceParts,
    NamespaceResource,
    NamespaceStatus,
    PartStatus,
    ResourcePhase,
    decode_namespace,
    readiness_conditions,
    status_body,
)
from kube_contract.resources import (
    CORE_NAMESPACE,
    FLEETBUS_NAMESPACE,
    LIMIT_RANGE,
    NETWORK_POLICY,
    RESOURCE_QUOTA,
    ROLE,
    ROLE_BINDING,
    ResourceInfo,
)

log = logging.getLogger(__name__)

PART_KINDS: dict[str, ResourceInfo] = {
    "ResourceQuota": RESOURCE_QUOTA,
    "LimitRange": LIMIT_RANGE,
    "NetworkPolicy": NETWORK_POLICY,
    "Role": ROLE,
    "RoleBinding": ROLE_BINDING,
}
WATCHED_KINDS = [CORE_NAMESPACE, *PART_KINDS.values()]


def _part(ready: list[bool], what: str, messages: list[str]) -> PartStatus:
    if not ready:
        return PartStatus(ready=True, count=0, message=f"no {what} requested")
    missing = [m for m in messages if m]
    return PartStatus(
        ready=all(ready),
        count=len(ready),
        message="; ".join(missing) if missing else f"{sum(ready)}/{len(ready)} ready",
    )


def parts_status(results: dict[str, list[tuple[bool, str]]]) -> NamespaceParts:
    """Per part family: ready or not, how many, and what is wrong. Pure."""

    def family(*kinds: str) -> tuple[list[bool], list[str]]:
        pairs = [pair for kind in kinds for pair in results.get(kind, [])]
        return [ok for ok, _ in pairs], [msg for ok, msg in pairs if not ok]

    namespace, ns_messages = family("Namespace")
    quota, quota_messages = family("ResourceQuota")
    limits, limit_messages = family("LimitRange")
    policies, policy_messages = family("NetworkPolicy")
    rbac, rbac_messages = family("Role", "RoleBinding")
    return NamespaceParts(
        namespace=_part(namespace, "namespace", ns_messages)
        if namespace
        else PartStatus(ready=False, message="not created yet"),
        resource_quota=_part(quota, "resource quota", quota_messages),
        limit_range=_part(limits, "limit range", limit_messages),
        network_policies=_part(policies, "network policies", policy_messages),
        rbac=_part(rbac, "roles or bindings", rbac_messages),
    )


def part_ready(obj: dict[str, Any], now: datetime) -> tuple[bool, str]:
    name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
    if obj.get("kind") == "Namespace" and obj.get("apiVersion") == "v1":
        phase = (obj.get("status") or {}).get("phase")
        if phase != "Active":
            return False, f"{name} is {phase or 'not active yet'}"
        return True, ""
    readiness = compute_status(obj, now)
    return (
        readiness.current,
        "" if readiness.current else f"{name}: {readiness.message}",
    )


class NamespaceReconciler:
    def __init__(
        self,
        kube: Kube,
        *,
        namespaces: Informer,
        clock: Callable[[], datetime],
    ) -> None:
        self.kube = kube
        self.namespaces = namespaces
        self.clock = clock

    async def reconcile(self, name: str) -> Outcome:
        obj = self.namespaces.get("", name)
        if obj is None:
            return Outcome()
        try:
            resource = decode_namespace(obj)
        except msgspec.ValidationError as e:
            log.warning("Namespace %s is malformed: %s", name, e)
            return Outcome()
        try:
            if resource.metadata.deleting:
                return await self._finalize(resource, obj)
            return await self._apply(resource, obj)
        except Conflict as e:
            log.info("Namespace %s: %s; trying again", name, e)
            return Outcome(retry_after=RETRY_CONFLICT)

    async def _write_status(self, obj: dict[str, Any], status: NamespaceStatus) -> None:
        body = status_body(status)
        if obj.get("status") == body:
            return
        try:
            stored = await self.kube.apply(
                {
                    "apiVersion": API_VERSION,
                    "kind": "Namespace",
                    "metadata": {"name": obj["metadata"]["name"]},
                    "status": body,
                },
                field_manager=FIELD_MANAGER,
                subresource="status",
                info=FLEETBUS_NAMESPACE,
            )
        except NotFound:
            return
        self.namespaces.remember(stored)

    async def _set_finalizer(self, obj: dict[str, Any], present: bool) -> dict[str, Any]:
        metadata = obj["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        if (FINALIZER in finalizers) == present:
            return obj
        finalizers = (
            [*finalizers, FINALIZER] if present else [f for f in finalizers if f != FINALIZER]
        )
        try:
            stored = await self.kube.patch(
                FLEETBUS_NAMESPACE,
                metadata["name"],
                {
                    "metadata": {
                        "resourceVersion": metadata["resourceVersion"],
                        "finalizers": finalizers,
                    }
                },
            )
        except NotFound:
            return obj
        if present:
            self.namespaces.remember(stored)
        return stored

    def _status(
        self,
        resource: NamespaceResource,
        *,
        phase: ResourcePhase,
        parts: NamespaceParts,
        reason: str,
        message: str,
    ) -> NamespaceStatus:
        return NamespaceStatus(
            phase=phase,
            observed_generation=resource.metadata.generation,
            parts=parts,
            reason=reason,
            message=message,
            conditions=readiness_conditions(
                resource.status.conditions,
                phase=phase,
                reason=reason,
                message=message,
                generation=resource.metadata.generation,
                now=rfc3339(self.clock()),
            ),
        )

    async def _apply(self, resource: NamespaceResource, obj: dict[str, Any]) -> Outcome:
        obj = await self._set_finalizer(obj, True)
        name = resource.metadata.name
        now = self.clock()
        live_namespace = await self.kube.get(CORE_NAMESPACE, name)
        if live_namespace is not None and (live_namespace.get("metadata") or {}).get(
            "deletionTimestamp"
        ):
            status = self._status(
                resource,
                phase="Progressing",
                parts=parts_status({"Namespace": [(False, f"namespace {name} is terminating")]}),
                reason="NamespaceTerminating",
                message=f"namespace {name} is terminating; it is re-created once it is gone",
            )
            await self._write_status(obj, status)
            return Outcome(retry_after=RETRY_TRANSIENT)
        results: dict[str, list[tuple[bool, str]]] = {}
        wanted: dict[str, set[str]] = {kind: set() for kind in PART_KINDS}
        failure: tuple[str, str] | None = None
        transient = False
        for manifest in namespace_parts(name, resource.spec, resource.metadata.uid):
            kind = str(manifest["kind"])
            if kind in wanted:
                wanted[kind].add(str(manifest["metadata"]["name"]))
            info = CORE_NAMESPACE if kind == "Namespace" else PART_KINDS[kind]
            try:
                stored = await self.kube.apply(
                    manifest, field_manager=FIELD_MANAGER, force=True, info=info
                )
            except KubeRejected as e:
                results.setdefault(kind, []).append((False, str(e)))
                failure = failure or ("PartRejected", str(e))
                continue
            except ControllerError as e:
                results.setdefault(kind, []).append((False, str(e)))
                transient = True
                if kind == "Namespace":
                    break
                continue
            results.setdefault(kind, []).append(part_ready(stored, now))
        if not transient:
            await self._prune(name, wanted)
        parts = parts_status(results)
        all_ready = all(
            part.ready
            for part in (
                parts.namespace,
                parts.resource_quota,
                parts.limit_range,
                parts.network_policies,
                parts.rbac,
            )
        )
        if failure is not None:
            status = self._status(
                resource,
                phase="Failed",
                parts=parts,
                reason=failure[0],
                message=failure[1],
            )
        elif all_ready:
            status = self._status(
                resource,
                phase="Ready",
                parts=parts,
                reason="Ready",
                message="namespace and all its parts are ready",
            )
        else:
            status = self._status(
                resource,
                phase="Progressing",
                parts=parts,
                reason="PartsNotReady",
                message="waiting for parts to be ready",
            )
        await self._write_status(obj, status)
        return Outcome(retry_after=RETRY_TRANSIENT if transient or not all_ready else None)

    async def _prune(self, name: str, wanted: dict[str, set[str]]) -> None:
        selector = f"{LABEL_NAMESPACE_OWNER}={name}"
        for kind, info in PART_KINDS.items():
            listing = await self.kube.list(info, namespace=name, label_selector=selector)
            for item in listing.items:
                part_name = str(item["metadata"]["name"])
                if part_name not in wanted[kind]:
                    await self.kube.delete(info, part_name, namespace=name)

    async def _finalize(self, resource: NamespaceResource, obj: dict[str, Any]) -> Outcome:
        name = resource.metadata.name
        if FINALIZER not in resource.metadata.finalizers:
            return Outcome()
        await self._prune(name, {kind: set() for kind in PART_KINDS})
        live = await self.kube.get(CORE_NAMESPACE, name)
        if live is not None:
            metadata = live.get("metadata") or {}
            ours = (metadata.get("labels") or {}).get(LABEL_NAMESPACE_OWNER) == name
            if ours and not metadata.get("deletionTimestamp"):
                await self.kube.delete(CORE_NAMESPACE, name, uid=str(metadata.get("uid") or ""))
        await self._set_finalizer(obj, False)
        log.info("Namespace %s removed", name)
        return Outcome()
