"""Parsed documents to a Taskset: checked, namespaced, slotted into phases, ordered.

Every format adapter (YAML, Kustomize, Helm) produces `SourceDocument`s and hands them here, so
the rules are the same whatever the packaging:

- every document must be an object the apiserver would accept (`taskset.manifests`);
- a namespaced object without a namespace (missing, empty or null) gets the taskset's
  namespace (Helm leaves it unset and relies on the client; fleetbus applies from a
  controller, so the object must say it); a stray namespace on a kind known to be
  cluster-scoped is removed, as the apiserver would; whether a kind is namespaced comes from
  `normalizer.scopes`, and a guess is named in a note;
- phases come from annotations (`normalizer.phases`); a Helm chart's `crds/` come first in
  `init`, because Helm installs them before any hook runs (fleetbus then keeps them applied
  like any other object, where Helm would never upgrade them);
- an object defined twice, or one in an earlier phase than its CRD or Namespace, is refused;
- each phase is put in install order (`taskset.ordering`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from normalizer.documents import SourceDocument
from normalizer.errors import (
    DuplicateObject,
    EmptySource,
    InvalidObject,
    MisplacedObject,
    UnsupportedSource,
)
from normalizer.phases import Classified, PhasePlacement, classify, wait_policy
from normalizer.scopes import Scope, scope_of
from taskset.manifests import crd_scopes, duplicate_refs, manifest_problems
from taskset.model import PHASES, ObjectRef, Phase, SourceInfo, Step, Taskset
from taskset.names import MAX_NAME, check_name
from taskset.ordering import GroupKind, misplaced_objects, order_phase

_NOT_IN_NAME = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class BuiltTaskset:
    taskset: Taskset
    left_out: tuple[str, ...] = ()
    """One line per object that was deliberately not taken (test and rollback hooks)."""
    notes: tuple[str, ...] = ()
    """What the user should know about how the source was read (guessed scopes, ...)."""


def taskset_name_from(candidate: str, origin: str) -> str:
    """A taskset name made from a chart, file or directory name when none was given.

    `My_App.yaml`'s stem becomes `my-app`: lowercase, runs of other characters as one '-'.
    """
    name = _NOT_IN_NAME.sub("-", candidate.lower()).strip("-")[:MAX_NAME].strip("-")
    if not name:
        raise UnsupportedSource(f"cannot make a taskset name from {origin}; pass --name")
    return check_name("taskset", name)


def describe_document(manifest: dict[str, Any]) -> str:
    """A short name for a document in errors, even when it lacks kind or name."""
    kind = manifest.get("kind")
    metadata = manifest.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if isinstance(kind, str) and kind and isinstance(name, str) and name:
        return f"{kind}/{name}"
    if isinstance(kind, str) and kind:
        return f"a {kind}"
    return "a document"


def check_document(document: SourceDocument) -> ObjectRef:
    problems = manifest_problems(document.manifest)
    if problems:
        raise InvalidObject(
            document.where, describe_document(document.manifest), "; ".join(problems)
        )
    return ObjectRef.of(document.manifest)


def with_namespace(manifest: dict[str, Any], namespace: str, scope: Scope) -> dict[str, Any]:
    """`manifest` placed in `namespace` if it is namespaced and names none; see the docstring."""
    metadata = manifest["metadata"]
    given = metadata.get("namespace")
    if scope.cluster_scoped:
        if "namespace" not in metadata:
            return manifest
        return {**manifest, "metadata": {k: v for k, v in metadata.items() if k != "namespace"}}
    if (isinstance(given, str) and given) or not namespace:
        return manifest
    placed: dict[str, Any] = {}
    for key, value in metadata.items():
        if key == "namespace":
            continue
        placed[key] = value
        if key == "name":
            placed["namespace"] = namespace
    placed.setdefault("namespace", namespace)
    return {**manifest, "metadata": placed}


@dataclass(frozen=True, slots=True)
class _Placed:
    document: SourceDocument
    ref: ObjectRef
    placement: PhasePlacement
    step: Step


def build_taskset(
    *,
    name: str,
    namespace: str,
    documents: Sequence[SourceDocument],
    source: SourceInfo,
    leading_crds: Sequence[SourceDocument] = (),
    source_label: str = "the source",
    discovered_scopes: Mapping[GroupKind, bool] | None = None,
    notes: Sequence[str] = (),
) -> BuiltTaskset:
    """The Taskset holding `documents` (and a chart's `crds/` in `leading_crds`).

    `discovered_scopes` is the target cluster's discovery (kind → cluster-scoped), when known.
    """
    for document in (*leading_crds, *documents):
        check_document(document)
    scopes = _Scopes(
        crd_scopes(document.manifest for document in (*leading_crds, *documents)),
        discovered_scopes,
    )
    placed: list[_Placed] = []
    left_out: list[str] = []
    for document in leading_crds:
        placed.append(_place(document, PhasePlacement("init"), namespace, scopes))
    for document in documents:
        what = describe_document(document.manifest)
        classified: Classified = classify(document.manifest, where=document.where, what=what)
        if not classified.placements:
            left_out.append(f"{document.where}: {what}: left out ({classified.left_out})")
        for placement in classified.placements:
            placed.append(_place(document, placement, namespace, scopes))
    if not placed:
        raise EmptySource(f"{source_label} holds no Kubernetes objects to apply")
    _refuse_duplicates(placed)
    phases: dict[Phase, list[Step]] = {phase: [] for phase in PHASES}
    for item in placed:
        phases[item.placement.phase].append(item.step)
    taskset = Taskset(
        name=name,
        namespace=namespace,
        init=order_phase(phases["init"]),
        install=order_phase(phases["install"]),
        post_install=order_phase(phases["postInstall"]),
        pre_delete=order_phase(phases["preDelete"]),
        source=source,
    )
    misplaced = misplaced_objects(taskset)
    if misplaced:
        raise MisplacedObject(
            f"{misplaced[0]}; move one of them so the object comes in the same or a later "
            "phase (fleetbus.io/phase, or its Helm hook)"
        )
    return BuiltTaskset(taskset, tuple(left_out), (*notes, *scopes.guess_notes(namespace)))


class _Scopes:
    """Scope decisions for one build, remembering the kinds whose scope was guessed."""

    def __init__(
        self, crds: Mapping[GroupKind, bool], discovered: Mapping[GroupKind, bool] | None
    ) -> None:
        self.crds = crds
        self.discovered = discovered
        self.guessed: dict[GroupKind, tuple[bool, list[str]]] = {}

    def of(self, ref: ObjectRef) -> Scope:
        group_kind = GroupKind.of_ref(ref)
        scope = scope_of(group_kind, self.crds, self.discovered)
        if scope.source == "guess":
            self.guessed.setdefault(group_kind, (scope.cluster_scoped, []))[1].append(ref.name)
        return scope

    def guess_notes(self, namespace: str) -> list[str]:
        notes: list[str] = []
        for group_kind, (cluster_scoped, names) in sorted(
            self.guessed.items(), key=lambda item: str(item[0])
        ):
            taken = (
                "cluster-scoped"
                if cluster_scoped
                else f"namespaced (in {namespace} unless they name a namespace)"
            )
            known = (
                "not a built-in kind, no CRD for it in the source"
                + ("" if self.discovered is None else ", not in the cluster's discovery")
                + ("" if self.discovered is not None else ", no cluster discovery known")
            )
            notes.append(
                f"the scope of {group_kind} is unknown ({known}); taken as {taken}: "
                f"{', '.join(sorted(set(names)))}"
            )
        return notes


def _place(
    document: SourceDocument,
    placement: PhasePlacement,
    namespace: str,
    scopes: _Scopes,
) -> _Placed:
    manifest = with_namespace(
        document.manifest, namespace, scopes.of(ObjectRef.of(document.manifest))
    )
    step = Step(
        object=manifest,
        wait=wait_policy(manifest, placement.phase),
        hook=placement.hook,
    )
    return _Placed(document, ObjectRef.of(manifest), placement, step)


def _refuse_duplicates(placed: Sequence[_Placed]) -> None:
    """An object may be in several phases only as a hook for each (like Helm's hooks)."""
    groups: list[list[_Placed]] = [
        [item for item in placed if item.placement.phase == phase] for phase in PHASES
    ]
    groups.append([item for item in placed if item.placement.hook is None])
    for group in groups:
        repeated = duplicate_refs(item.ref for item in group)
        if not repeated:
            continue
        ref = repeated[0]
        wheres = [
            item.document.where
            for item in group
            if (item.ref.group, item.ref.kind, item.ref.namespace, item.ref.name)
            == (ref.group, ref.kind, ref.namespace, ref.name)
        ]
        raise DuplicateObject(
            f"{ref} is defined more than once: at {' and at '.join(wheres)}; "
            "each object may appear only once"
        )
