"""The taskset spec a user writes: how fleetbus treats the objects, beside what they are.

A chart, overlay or YAML directory may carry a `fleetbus.yaml` next to its sources (and
`fleetbus publish` takes the same settings as flags, the API as publish fields, which win over
the file). It says what no packaging format can:

```yaml
driftPolicy: correct          # correct | report | ignore, for every object
ignorePaths: [/spec/replicas] # JSON pointers drift leaves alone, on every object
adopt: false                  # take over objects that exist already instead of failing
objects:                      # per object (kind + name, namespace optional)
  - kind: Deployment
    name: web
    driftPolicy: report
    ignorePaths: [/spec/template/metadata/annotations]
    adopt: true
stepJobs:                     # Jobs that run against an object under a restricted account
  - job: seed                 # a Job of the source, by name
    object: {kind: ConfigMap, name: seed-input}
```

Objects can say the same about themselves with annotations: `fleetbus.io/drift:
correct|report|ignore`, `fleetbus.io/ignore-paths: /spec/replicas,/data/x` and
`fleetbus.io/adopt: "true"`; an `objects` entry of the spec wins over the object's annotation.

A Step Job is taken out of the taskset's objects and attached to the named object: the
controller runs it once that object is ready, as a ServiceAccount that may work on that kind of
object in that namespace and nothing else. Everything is checked here, with errors naming the
file, the field (`objects[1].driftPolicy`) and the rule broken.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, get_args

import msgspec

from normalizer.documents import TASKSET_SPEC_FILE, parse_single_mapping, read_text
from normalizer.errors import InvalidTasksetSpec
from normalizer.phases import HOOK_ANNOTATION, PHASE_ANNOTATION
from taskset.model import PHASES, DriftPolicy, ObjectRef, Phase, Step, Taskset

SPEC_FILE = TASKSET_SPEC_FILE
DRIFT_ANNOTATION = "fleetbus.io/drift"
IGNORE_PATHS_ANNOTATION = "fleetbus.io/ignore-paths"
ADOPT_ANNOTATION = "fleetbus.io/adopt"
DRIFT_POLICIES: tuple[str, ...] = get_args(DriftPolicy)
MAX_IGNORE_PATHS = 64
MAX_POINTER = 512

_TOP_KEYS = ("driftPolicy", "ignorePaths", "adopt", "objects", "stepJobs")
_OBJECT_KEYS = ("kind", "name", "namespace", "apiVersion", "driftPolicy", "ignorePaths", "adopt")
_STEP_JOB_KEYS = ("job", "namespace", "object")
_MATCH_KEYS = ("kind", "name", "namespace", "apiVersion")


@dataclass(frozen=True)
class ObjectMatch:
    """Which object an entry speaks of: kind and name, namespace and apiVersion if given."""

    kind: str
    name: str
    namespace: str = ""
    api_version: str = ""

    def matches(self, ref: ObjectRef) -> bool:
        return (
            ref.kind == self.kind
            and ref.name == self.name
            and (not self.namespace or ref.namespace == self.namespace)
            and (not self.api_version or ref.api_version == self.api_version)
        )

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"


@dataclass(frozen=True)
class ObjectSettings:
    match: ObjectMatch
    drift_policy: DriftPolicy | None = None
    ignore_paths: tuple[str, ...] = ()
    adopt: bool | None = None
    field: str = ""
    """Where the entry is, e.g. `objects[0]`, for errors."""


@dataclass(frozen=True)
class StepJob:
    job: str
    object: ObjectMatch
    namespace: str = ""
    field: str = ""


@dataclass(frozen=True)
class TasksetSpec:
    """The settings a user gives; None / empty means "not said here"."""

    drift_policy: DriftPolicy | None = None
    ignore_paths: tuple[str, ...] | None = None
    adopt: bool | None = None
    objects: tuple[ObjectSettings, ...] = ()
    step_jobs: tuple[StepJob, ...] = ()
    source: str = SPEC_FILE
    """Where the settings came from, for errors."""


# --- reading and checking ----------------------------------------------------------------------


def _fail(source: str, where: str, problem: str) -> InvalidTasksetSpec:
    return InvalidTasksetSpec(f"{source}: {where}: {problem}" if where else f"{source}: {problem}")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _unknown_keys(data: Mapping[str, Any], known: Sequence[str], source: str, where: str) -> None:
    for key in data:
        if key not in known:
            raise _fail(
                source,
                f"{where}.{key}" if where else str(key),
                f"unknown field; known fields are {', '.join(known)}",
            )


def check_drift_policy(value: Any, source: str, where: str) -> DriftPolicy:
    if value not in DRIFT_POLICIES:
        raise _fail(
            source, where, f"{value!r} is not a drift policy; use {', '.join(DRIFT_POLICIES)}"
        )
    return cast(DriftPolicy, value)


def check_ignore_paths(values: Any, source: str, where: str) -> tuple[str, ...]:
    """JSON pointers: each starts with '/', has no empty segment; at most MAX_IGNORE_PATHS."""
    if not isinstance(values, list):
        raise _fail(source, where, f"must be a list of JSON pointers, not {_type_name(values)}")
    if len(values) > MAX_IGNORE_PATHS:
        raise _fail(source, where, f"{len(values)} paths, more than the {MAX_IGNORE_PATHS} allowed")
    checked: list[str] = []
    for index, pointer in enumerate(values):
        at = f"{where}[{index}]"
        if not isinstance(pointer, str):
            raise _fail(source, at, f"must be a JSON pointer string, not {_type_name(pointer)}")
        if not pointer.startswith("/") or pointer == "/":
            raise _fail(
                source, at, f"{pointer!r} is not a JSON pointer to a field (e.g. /spec/replicas)"
            )
        if "" in pointer[1:].split("/"):
            raise _fail(source, at, f"{pointer!r} has an empty segment")
        if len(pointer) > MAX_POINTER:
            raise _fail(source, at, f"longer than {MAX_POINTER} characters")
        checked.append(pointer)
    return tuple(checked)


def _check_bool(value: Any, source: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(source, where, f"must be true or false, not {value!r}")
    return value


def _check_text(data: Mapping[str, Any], key: str, source: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise _fail(source, f"{where}.{key}", "is required and must be a non-empty string")
    return value


def _optional_text(data: Mapping[str, Any], key: str, source: str, where: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise _fail(source, f"{where}.{key}", f"must be a string, not {_type_name(value)}")
    return value


def _match(data: Any, source: str, where: str) -> ObjectMatch:
    if not isinstance(data, Mapping):
        raise _fail(source, where, f"must be a mapping with kind and name, not {_type_name(data)}")
    return ObjectMatch(
        kind=_check_text(data, "kind", source, where),
        name=_check_text(data, "name", source, where),
        namespace=_optional_text(data, "namespace", source, where),
        api_version=_optional_text(data, "apiVersion", source, where),
    )


def parse_spec(data: Mapping[str, Any], source: str = SPEC_FILE) -> TasksetSpec:
    """A TasksetSpec from its YAML/JSON form, checked; errors name `source` and the field."""
    _unknown_keys(data, _TOP_KEYS, source, "")
    drift = (
        check_drift_policy(data["driftPolicy"], source, "driftPolicy")
        if "driftPolicy" in data
        else None
    )
    ignore = (
        check_ignore_paths(data["ignorePaths"], source, "ignorePaths")
        if "ignorePaths" in data
        else None
    )
    adopt = _check_bool(data["adopt"], source, "adopt") if "adopt" in data else None
    objects_data = data.get("objects", [])
    if not isinstance(objects_data, list):
        raise _fail(source, "objects", f"must be a list, not {_type_name(objects_data)}")
    objects: list[ObjectSettings] = []
    for index, entry in enumerate(objects_data):
        where = f"objects[{index}]"
        match = _match(entry, source, where)
        _unknown_keys(entry, _OBJECT_KEYS, source, where)
        objects.append(
            ObjectSettings(
                match=match,
                drift_policy=check_drift_policy(
                    entry["driftPolicy"], source, f"{where}.driftPolicy"
                )
                if "driftPolicy" in entry
                else None,
                ignore_paths=check_ignore_paths(
                    entry["ignorePaths"], source, f"{where}.ignorePaths"
                )
                if "ignorePaths" in entry
                else (),
                adopt=_check_bool(entry["adopt"], source, f"{where}.adopt")
                if "adopt" in entry
                else None,
                field=where,
            )
        )
    jobs_data = data.get("stepJobs", [])
    if not isinstance(jobs_data, list):
        raise _fail(source, "stepJobs", f"must be a list, not {_type_name(jobs_data)}")
    step_jobs: list[StepJob] = []
    for index, entry in enumerate(jobs_data):
        where = f"stepJobs[{index}]"
        if not isinstance(entry, Mapping):
            raise _fail(
                source, where, f"must be a mapping with job and object, not {_type_name(entry)}"
            )
        _unknown_keys(entry, _STEP_JOB_KEYS, source, where)
        target = entry.get("object")
        if target is None:
            raise _fail(source, f"{where}.object", "is required: the object the Job works on")
        match = _match(target, source, f"{where}.object")
        _unknown_keys(target, _MATCH_KEYS, source, f"{where}.object")
        step_jobs.append(
            StepJob(
                job=_check_text(entry, "job", source, where),
                object=match,
                namespace=_optional_text(entry, "namespace", source, where),
                field=where,
            )
        )
    return TasksetSpec(
        drift_policy=drift,
        ignore_paths=ignore,
        adopt=adopt,
        objects=tuple(objects),
        step_jobs=tuple(step_jobs),
        source=source,
    )


# --- annotations -------------------------------------------------------------------------------


SETTING_ANNOTATIONS = (DRIFT_ANNOTATION, IGNORE_PATHS_ANNOTATION, ADOPT_ANNOTATION)


def has_setting_annotations(taskset: Taskset) -> bool:
    for _, step in taskset.steps():
        annotations = (step.object.get("metadata") or {}).get("annotations") or {}
        if isinstance(annotations, Mapping) and any(a in annotations for a in SETTING_ANNOTATIONS):
            return True
    return False


def annotation_settings(manifest: Mapping[str, Any]) -> ObjectSettings | None:
    """What an object says about itself in `fleetbus.io/drift|ignore-paths|adopt`."""
    metadata = manifest.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    if not isinstance(annotations, Mapping):
        return None
    if not any(a in annotations for a in SETTING_ANNOTATIONS):
        return None
    ref = ObjectRef.of(dict(manifest))
    what = str(ref)
    drift = (
        check_drift_policy(
            str(annotations[DRIFT_ANNOTATION]).strip(), what, f"annotation {DRIFT_ANNOTATION}"
        )
        if DRIFT_ANNOTATION in annotations
        else None
    )
    ignore: tuple[str, ...] = ()
    if IGNORE_PATHS_ANNOTATION in annotations:
        raw = str(annotations[IGNORE_PATHS_ANNOTATION])
        ignore = check_ignore_paths(
            [p.strip() for p in raw.split(",") if p.strip()],
            what,
            f"annotation {IGNORE_PATHS_ANNOTATION}",
        )
    adopt: bool | None = None
    if ADOPT_ANNOTATION in annotations:
        raw_adopt = str(annotations[ADOPT_ANNOTATION]).strip().lower()
        if raw_adopt not in ("true", "false"):
            raise _fail(
                what,
                f"annotation {ADOPT_ANNOTATION}",
                f'must be "true" or "false", not {raw_adopt!r}',
            )
        adopt = raw_adopt == "true"
    return ObjectSettings(
        match=ObjectMatch(kind=ref.kind, name=ref.name, namespace=ref.namespace),
        drift_policy=drift,
        ignore_paths=ignore,
        adopt=adopt,
    )


# --- applying a spec to a Taskset ----------------------------------------------------------------


def _with_settings(step: Step, settings: ObjectSettings) -> Step:
    return msgspec.structs.replace(
        step,
        drift_policy=settings.drift_policy or step.drift_policy,
        ignore_paths=list(settings.ignore_paths) if settings.ignore_paths else step.ignore_paths,
        adopt=settings.adopt if settings.adopt is not None else step.adopt,
    )


def apply_spec(taskset: Taskset, spec: TasksetSpec) -> Taskset:
    """`taskset` with the spec's settings (annotations first, then the spec's `objects`), its
    Step Jobs attached to their objects. Every entry must find its object."""
    phases: dict[Phase, list[Step]] = {phase: list(taskset.phase(phase)) for phase in PHASES}
    for phase in PHASES:
        phases[phase] = [
            _with_settings(step, found)
            if (found := annotation_settings(step.object)) is not None
            else step
            for step in phases[phase]
        ]
    for settings in spec.objects:
        hits = 0
        for phase in PHASES:
            updated = []
            for step in phases[phase]:
                if settings.match.matches(step.ref):
                    hits += 1
                    step = _with_settings(step, settings)
                updated.append(step)
            phases[phase] = updated
        if not hits:
            raise _fail(spec.source, settings.field, f"no object {settings.match} in the source")
    for step_job in spec.step_jobs:
        phases = _attach_step_job(phases, step_job, spec.source)
    drift = spec.drift_policy or taskset.drift_policy
    ignore = list(spec.ignore_paths) if spec.ignore_paths is not None else taskset.ignore_paths
    return msgspec.structs.replace(
        taskset,
        init=phases["init"],
        install=phases["install"],
        post_install=phases["postInstall"],
        pre_delete=phases["preDelete"],
        drift_policy=drift,
        ignore_paths=ignore,
        adopt=spec.adopt if spec.adopt is not None else taskset.adopt,
    )


def _attach_step_job(
    phases: dict[Phase, list[Step]], step_job: StepJob, source: str
) -> dict[Phase, list[Step]]:
    jobs = [
        (phase, index)
        for phase in PHASES
        for index, step in enumerate(phases[phase])
        if step.ref.kind == "Job"
        and step.ref.api_version == "batch/v1"
        and step.ref.name == step_job.job
        and (not step_job.namespace or step.ref.namespace == step_job.namespace)
    ]
    if not jobs:
        raise _fail(source, f"{step_job.field}.job", f"no Job {step_job.job!r} in the source")
    if len(jobs) > 1:
        raise _fail(
            source,
            f"{step_job.field}.job",
            f"Job {step_job.job!r} is a hook of several phases; a Step Job runs once",
        )
    job_phase, job_index = jobs[0]
    job_step = phases[job_phase][job_index]
    annotations = (job_step.object.get("metadata") or {}).get("annotations") or {}
    if HOOK_ANNOTATION in annotations or PHASE_ANNOTATION in annotations:
        raise _fail(
            source,
            f"{step_job.field}.job",
            f"Job {step_job.job!r} is a Helm hook or has a phase annotation; a Step Job runs "
            "when its object is ready, so drop the annotation",
        )
    targets = [
        (phase, index)
        for phase in PHASES
        for index, step in enumerate(phases[phase])
        if step_job.object.matches(step.ref)
    ]
    if not targets:
        raise _fail(
            source, f"{step_job.field}.object", f"no object {step_job.object} in the source"
        )
    target_phase, target_index = targets[0]
    target = phases[target_phase][target_index]
    if target.job is not None:
        raise _fail(source, f"{step_job.field}.object", f"{target.ref} has a Step Job already")
    if target.ref.namespace != job_step.ref.namespace:
        raise _fail(
            source,
            f"{step_job.field}",
            f"Job {job_step.ref} and {target.ref} are in different namespaces; a Step Job "
            "runs in its object's namespace",
        )
    job = {k: v for k, v in job_step.object.items() if k not in ("apiVersion", "kind")}
    result = {phase: list(steps) for phase, steps in phases.items()}
    result[target_phase][target_index] = msgspec.structs.replace(target, job=job)
    del result[job_phase][job_index]
    return result


# --- where the settings come from ------------------------------------------------------------


def settings_beside(path: Path) -> tuple[dict[str, Any], str]:
    """The `fleetbus.yaml` beside a source, checked, as data with its label ({} if none): in
    the directory itself (a chart, an overlay, a YAML directory), or in the directory of a
    `Chart.yaml` or kustomization file given by name."""
    if path.is_dir():
        directory = path
    elif path.name in ("Chart.yaml", "kustomization.yaml", "kustomization.yml", "Kustomization"):
        directory = path.parent
    else:
        return {}, ""
    candidate = directory / SPEC_FILE
    if not candidate.is_file():
        return {}, ""
    label = str(candidate)
    data = parse_single_mapping(read_text(candidate), label)
    parse_spec(data, label)
    return data, label


def merge_settings(
    file_data: Mapping[str, Any], fields: Mapping[str, Any], fields_label: str
) -> dict[str, Any]:
    """The file's settings with `fields` (from the command line or API) winning, key by key.

    `fields` are checked here under `fields_label`."""
    given = {key: value for key, value in fields.items() if value is not None}
    if given:
        parse_spec(given, fields_label)
    return {**file_data, **given}


def apply_settings(taskset: Taskset, settings: Mapping[str, Any], label: str) -> Taskset:
    """`apply_spec` with settings in their data form, which the Taskset keeps (`settings`) so
    that a chart re-rendered for one cluster gets them again."""
    applied = apply_spec(taskset, parse_spec(settings, label or SPEC_FILE))
    return msgspec.structs.replace(applied, settings=dict(settings))
