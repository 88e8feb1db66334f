"""Materializing: the Taskset one cluster gets for one version, with its overrides folded in.

Clusters that share a version and the same applicable overrides share one result, so a
publish to a thousand clusters without overrides renders and digests once. A result that does
not fit in one DESIRED message is a refusal, not an error: the cluster keeps what it had.

Secret values arrive sealed (`events.sealed`): the snapshot, the overrides and blueprint values
are opened with the hub's keyring right before they are folded together, and only in memory.
A value that cannot be opened (its data key was shredded) is a refusal naming the key.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import msgspec

from events.streams import MAX_PAYLOAD
from scheduler.dependencies import BlueprintPlacement
from scheduler.state import SchedulerState
from sealing.envelope import DataKeys
from sealing.errors import SealingError
from sealing.trees import open_taskset, open_tree, sealed_key_ids
from taskset.capabilities import RenderContext, render_context
from taskset.codec import encode_taskset
from taskset.digest import digest_of
from taskset.errors import FleetbusError
from taskset.model import Taskset
from taskset.overrides import HelmRenderer, Override, Snapshot, customize, overrides_for

DESIRED_HEADROOM = 16 * 1024
"""Room left in a DESIRED message for the ClusterTask's own fields and the NATS headers."""

DESIRED_LIMIT = MAX_PAYLOAD - DESIRED_HEADROOM
"""The largest compressed Taskset a ClusterTask may carry."""


@dataclass(frozen=True)
class Materialized:
    taskset: Taskset
    digest: str
    size: int
    overrides: tuple[str, ...]
    input_digest: str


@dataclass(frozen=True)
class Refusal:
    reason: str
    overrides: tuple[str, ...]
    input_digest: str
    size: int = 0
    limit: int = 0


def cluster_render_context(
    state: SchedulerState, cluster: str, taskset: str, version: int, snapshot: Taskset
) -> RenderContext | None:
    """What a Helm snapshot must be rendered for on `cluster`, if it consults anything that
    differs per cluster (`taskset.capabilities.render_context`).

    `.Release.Revision` counts the versions the cluster got (`SchedulerState.releases`): 1 for
    its first, the same while the version stays (an override changes nothing), one more for a
    new version; `.Release.IsUpgrade` is true from revision 2 on. Clusters that agree on what
    the chart consults share one render."""
    source = snapshot.source
    if source is None or not source.consults or not source.chart_archive:
        return None
    known = state.releases.get((cluster, taskset))
    if known is None:
        revision = 1
    elif known[0] == version:
        revision = known[1]
    else:
        revision = known[1] + 1
    return render_context(
        source.consults,
        state.capabilities.get(cluster),
        is_upgrade=revision > 1,
        revision=revision,
    )


class Materializer:
    """Computes (and remembers) what a cluster gets; the renderer is the only port it uses."""

    def __init__(
        self,
        renderer: HelmRenderer | None,
        *,
        limit: int = DESIRED_LIMIT,
        cache_size: int = 256,
        keys: DataKeys | None = None,
    ) -> None:
        self.renderer = renderer
        self.keys = keys
        self.limit = limit
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Materialized | Refusal] = OrderedDict()
        self._shredded = 0

    def __call__(
        self,
        state: SchedulerState,
        cluster: str,
        taskset: str,
        version: int,
        blueprint: BlueprintPlacement | None = None,
    ) -> Materialized | Refusal:
        if state.shredded != self._shredded:
            # Keys were shredded: results opened with them must not outlive them in memory.
            self._cache.clear()
            self._shredded = state.shredded
        record = state.tasksets[taskset].versions[version]
        labels = state.clusters.get(cluster, {})
        applicable = overrides_for(cluster, labels, state.overrides.get(taskset, {}).values())
        if blueprint is not None and blueprint.entry.values:
            # The blueprint entry's values come first: a cluster's own overrides still win.
            applicable = [
                Override(
                    taskset=taskset,
                    name=f"blueprint-{blueprint.blueprint}",
                    cluster=cluster,
                    values=blueprint.entry.values,
                    revision=f"{blueprint.blueprint}@{blueprint.blueprint_version}",
                ),
                *applicable,
            ]
        drift_policy = blueprint.drift_policy if blueprint is not None else ""
        names = tuple(o.name for o in applicable)
        snapshot = record.snapshot()
        context = cluster_render_context(state, cluster, taskset, version, snapshot.taskset)
        input_digest = digest_of(
            {
                "taskset": taskset,
                "version": version,
                "digest": record.digest,
                "overrides": [o.revision for o in applicable],
                "drift_policy": drift_policy,
                "limit": self.limit,
                "context": context.digest if context is not None else "",
            }
        )
        cached = self._cache.get(input_digest)
        if cached is not None:
            self._cache.move_to_end(input_digest)
            return cached
        result: Materialized | Refusal
        try:
            snapshot, applicable = self._opened(record.snapshot(), applicable)
            customized = customize(snapshot, applicable, self.renderer, context)
            if drift_policy:
                customized = msgspec.structs.replace(customized, drift_policy=drift_policy)
        except FleetbusError as e:
            result = Refusal(reason=str(e), overrides=names, input_digest=input_digest)
        else:
            size = len(encode_taskset(customized))
            if size > self.limit:
                result = Refusal(
                    reason=(
                        f"taskset {taskset} v{version} with overrides {', '.join(names) or '-'} "
                        f"is {size:,} bytes compressed, over the limit of {self.limit:,} bytes"
                    ),
                    overrides=names,
                    input_digest=input_digest,
                    size=size,
                    limit=self.limit,
                )
            else:
                result = Materialized(
                    taskset=customized,
                    digest=digest_of(customized),
                    size=size,
                    overrides=names,
                    input_digest=input_digest,
                )
        if isinstance(result, Refusal) and not result.size:
            # A render that failed may work next time (the chart store was unreachable).
            return result
        self._cache[input_digest] = result
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result

    def _opened(
        self, snapshot: Snapshot, applicable: list[Override]
    ) -> tuple[Snapshot, list[Override]]:
        """The snapshot and overrides with their sealed values opened (in memory only)."""
        keys = self.keys
        if keys is None:
            sealed = sealed_key_ids(
                [snapshot.values, [o.values for o in applicable]]
                + [step.object for _, step in snapshot.taskset.steps()]
            )
            if sealed:
                raise SealingError(
                    "the taskset carries sealed secrets (data key "
                    f"{min(sealed)}) and this scheduler has no keyring to open them"
                )
            return snapshot, applicable
        opened_snapshot = msgspec.structs.replace(
            snapshot,
            taskset=open_taskset(keys, snapshot.taskset),
            values=open_tree(keys, snapshot.values),
        )
        opened = []
        for override in applicable:
            try:
                opened.append(
                    msgspec.structs.replace(
                        override,
                        values=open_tree(keys, override.values),
                        patches=tuple(
                            msgspec.structs.replace(
                                patch,
                                merge_patch=open_tree(keys, patch.merge_patch),
                                json_patch=open_tree(keys, patch.json_patch),
                            )
                            for patch in override.patches
                        ),
                    )
                )
            except SealingError as e:
                raise SealingError(f"override {override.name}: {e}") from e
        return opened_snapshot, opened
