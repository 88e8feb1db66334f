"""Resource identities: how the apiserver serves each kind fleetbus reads or writes.

One place for them all, so the edge connector and the cluster controller name the CRDs the same
way, and a kind's REST path is spelled once. A `ResourceInfo` is what discovery would answer
for a kind (group, version, plural, scope); kinds found only at run time (the objects of a
taskset) are discovered by the controller's client, never listed here.
"""

from __future__ import annotations

import msgspec

from kube_contract.model import GROUP, VERSION


class ResourceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """How the apiserver serves one kind: its REST path segments and scope."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str = "", name: str = "", subresource: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


# --- fleetbus's own resources (the CRDs in cluster_controller/crds/) ----------------------------

TASK = ResourceInfo(group=GROUP, version=VERSION, kind="Task", plural="tasks", namespaced=True)
TASKLET = ResourceInfo(
    group=GROUP, version=VERSION, kind="Tasklet", plural="tasklets", namespaced=True
)
STEP = ResourceInfo(group=GROUP, version=VERSION, kind="Step", plural="steps", namespaced=True)
FLEETBUS_NAMESPACE = ResourceInfo(
    group=GROUP, version=VERSION, kind="Namespace", plural="fleetnamespaces", namespaced=False
)
"""`fleetnamespaces.fleetbus.io`: a cluster-scoped resource named `namespaces` could not be read
by name through the apiserver."""

# --- Kubernetes' own kinds --------------------------------------------------------------------

CRD = ResourceInfo(
    group="apiextensions.k8s.io",
    version="v1",
    kind="CustomResourceDefinition",
    plural="customresourcedefinitions",
    namespaced=False,
)
CORE_NAMESPACE = ResourceInfo(
    group="", version="v1", kind="Namespace", plural="namespaces", namespaced=False
)
JOB = ResourceInfo(group="batch", version="v1", kind="Job", plural="jobs", namespaced=True)
SERVICE_ACCOUNT = ResourceInfo(
    group="", version="v1", kind="ServiceAccount", plural="serviceaccounts", namespaced=True
)
ROLE = ResourceInfo(
    group="rbac.authorization.k8s.io", version="v1", kind="Role", plural="roles", namespaced=True
)
ROLE_BINDING = ResourceInfo(
    group="rbac.authorization.k8s.io",
    version="v1",
    kind="RoleBinding",
    plural="rolebindings",
    namespaced=True,
)
RESOURCE_QUOTA = ResourceInfo(
    group="", version="v1", kind="ResourceQuota", plural="resourcequotas", namespaced=True
)
LIMIT_RANGE = ResourceInfo(
    group="", version="v1", kind="LimitRange", plural="limitranges", namespaced=True
)
NETWORK_POLICY = ResourceInfo(
    group="networking.k8s.io",
    version="v1",
    kind="NetworkPolicy",
    plural="networkpolicies",
    namespaced=True,
)
LEASE = ResourceInfo(
    group="coordination.k8s.io", version="v1", kind="Lease", plural="leases", namespaced=True
)
EVENT = ResourceInfo(group="", version="v1", kind="Event", plural="events", namespaced=True)
