"""Renders that differ between two runs of the same inputs, and what to do about them.

Charts generate passwords and certificates while rendering (`randAlphaNum`, `genCA`, `now`;
`lookup`, which would find the value already in the cluster, is empty offline). Two renders of
the same chart with the same values then differ, so a re-render would silently rotate a
password, and the difference is hidden by Secret masking. fleetbus makes this visible and
safe:

- `unstable_fields` compares two renders of the same inputs and names every object and field
  that differs; the normalizer reports them in a note, so the user learns to pin the value;
- `keep_previous` is the rule for a re-render (per-cluster values overrides): a field that
  differs only by randomness keeps the value the published version already had. "Only by
  randomness" is checked: the text around the generated part (what every render shares) must
  be the same in the previous value as in the new renders. Two random strings share a first or
  last character by chance, so the adapter renders again before a refusal stands. If an
  override changed the text around it, keeping the old value would drop the override's change
  and taking the new one would rotate the secret, so the re-render is refused, naming the
  object and field.

Pure functions over manifests; the Helm adapter renders twice only for charts whose templates
call a generating function (`calls_a_generating_function`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from normalizer.errors import RegenerationRefused
from taskset.model import ObjectRef

GENERATING_FUNCTIONS = (
    *("randAlphaNum", "randAlpha", "randNumeric", "randAscii", "randBytes", "randInt", "uuidv4"),
    *("genPrivateKey", "genCA", "genCAWithKey", "genSelfSignedCert", "genSelfSignedCertWithKey"),
    *("genSignedCert", "genSignedCertWithKey", "htpasswd", "bcrypt", "encryptAES", "now"),
    "shuffle",
)
"""Sprig functions whose result differs on every render."""
NONDETERMINISTIC_TEMPLATE = re.compile(r"\{\{[^}]*\b(" + "|".join(GENERATING_FUNCTIONS) + r")\b")
"""A template action calling one of `GENERATING_FUNCTIONS`."""
_GENERATING_WORDS = ("rand", "uuidv4", "gen", "htpasswd", "bcrypt", "encryptAES", "now", "shuffle")


_FUNCTIONS_BY_WORD = {
    word: tuple(name for name in GENERATING_FUNCTIONS if name.startswith(word))
    for word in _GENERATING_WORDS
}


def _is_word_character(character: str) -> bool:
    """Whether `character` is one of the regular expression's word characters (`\\w`)."""
    return character.isalnum() or character == "_"


def calls_a_generating_function(template: str) -> bool:
    """Whether a template's text has an action calling one of `GENERATING_FUNCTIONS`: what
    `NONDETERMINISTIC_TEMPLATE` finds.

    Found without that regular expression, which is slow on the megabytes of dashboards some
    charts hold in their templates: each place a function's name starts (a fixed string) is
    looked at, and is a call in an action when it is a whole word and a `{{` comes before it
    with no `}` in between."""
    for word, functions in _FUNCTIONS_BY_WORD.items():
        start = template.find(word)
        while start >= 0:
            if start > 0 and not _is_word_character(template[start - 1]):
                for function in functions:
                    end = start + len(function)
                    if template.startswith(function, start) and (
                        end == len(template) or not _is_word_character(template[end])
                    ):
                        closed = template.rfind("}", 0, start)
                        if template.find("{{", closed + 1, start) >= 0:
                            return True
                        break
            start = template.find(word, start + 1)
    return False


Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class UnstableField:
    ref: ObjectRef
    path: Path
    where: str
    """The template (and line) that rendered the object."""


def path_text(path: Path) -> str:
    """`spec.template.spec.containers[0].env` for ("spec", ..., 0, "env")."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def differing_paths(first: Any, second: Any, path: Path = ()) -> list[Path]:
    """The paths of the leaves (or subtrees of another shape) where two values differ."""
    if isinstance(first, dict) and isinstance(second, dict):
        found: list[Path] = []
        for key in sorted(first.keys() | second.keys()):
            if key not in first or key not in second:
                found.append((*path, key))
            else:
                found.extend(differing_paths(first[key], second[key], (*path, key)))
        return found
    if isinstance(first, list) and isinstance(second, list) and len(first) == len(second):
        return [
            found
            for index, (a, b) in enumerate(zip(first, second, strict=True))
            for found in differing_paths(a, b, (*path, index))
        ]
    return [] if first == second else [path]


def unstable_fields(
    first: Sequence[tuple[str, Mapping[str, Any]]], second: Sequence[tuple[str, Mapping[str, Any]]]
) -> list[UnstableField]:
    """Fields that differ between two renders of the same inputs, given as (where, manifest).

    Objects are matched by identity (kind, namespace, name); an object only one render has
    counts as unstable as a whole (empty path).
    """
    by_ref = {ObjectRef.of(dict(manifest)): (where, manifest) for where, manifest in second}
    found: list[UnstableField] = []
    for where, manifest in first:
        ref = ObjectRef.of(dict(manifest))
        other = by_ref.get(ref)
        if other is None:
            found.append(UnstableField(ref, (), where))
            continue
        found.extend(
            UnstableField(ref, path, where) for path in differing_paths(manifest, other[1])
        )
    return found


def describe_unstable(fields: Sequence[UnstableField]) -> list[str]:
    """One note per object whose render is not reproducible."""
    by_object: dict[tuple[str, str], list[str]] = {}
    for field in fields:
        by_object.setdefault((field.where, str(field.ref)), []).append(
            path_text(field.path) or "(the whole object)"
        )
    return [
        f"{where}: {ref}: {', '.join(paths)} {'differs' if len(paths) == 1 else 'differ'} "
        "between two renders of the same inputs "
        "(a generated value); set it in the values to make every render the same"
        for (where, ref), paths in by_object.items()
    ]


def _value_at(value: Any, path: Path) -> tuple[bool, Any]:
    for part in path:
        if isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
            continue
        if isinstance(value, dict) and isinstance(part, str) and part in value:
            value = value[part]
            continue
        return False, None
    return True, value


def _with_value(manifest: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    copied = copy.deepcopy(manifest)
    target: Any = copied
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return copied


def _frame(renders: Sequence[str]) -> tuple[str, str]:
    """The prefix and suffix that every render of one generated string shares.

    Two random strings share a first or last character by chance (1 in 62 for alphanumerics),
    so the frame of two renders can include a generated character; every further render makes
    that 62 times less likely."""
    first = renders[0]
    shortest = min(len(render) for render in renders)
    prefix = 0
    while prefix < shortest and all(render[prefix] == first[prefix] for render in renders):
        prefix += 1
    suffix = 0
    limit = shortest - prefix
    while suffix < limit and all(render[-1 - suffix] == first[-1 - suffix] for render in renders):
        suffix += 1
    return first[:prefix], first[len(first) - suffix :]


def keep_previous(
    manifests: Sequence[dict[str, Any]],
    other_renders: Sequence[Sequence[dict[str, Any]]],
    unstable: Sequence[UnstableField],
    previous: Mapping[ObjectRef, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """`manifests` with every generated field set back to its previous value (see above).

    `other_renders` are further renders of the same inputs (at least one); the more there are,
    the less a frame can include generated characters shared by chance. A refusal says the
    frame changed: a caller with few renders may render once more and ask again."""
    others = [{ObjectRef.of(manifest): manifest for manifest in render} for render in other_renders]
    by_ref: dict[ObjectRef, list[UnstableField]] = {}
    for field in unstable:
        by_ref.setdefault(field.ref, []).append(field)
    kept: list[dict[str, Any]] = []
    for manifest in manifests:
        ref = ObjectRef.of(manifest)
        before = previous.get(ref)
        for field in by_ref.get(ref, []) if before is not None else []:
            assert before is not None
            had, old = _value_at(before, field.path)
            if not had or not field.path:
                continue  # new in this version: nothing to keep
            _, new = _value_at(manifest, field.path)
            agains = [_value_at(other.get(ref, {}), field.path)[1] for other in others]
            if isinstance(new, str) and all(isinstance(again, str) for again in agains):
                prefix, suffix = _frame([new, *agains])
                keeps_frame = (
                    isinstance(old, str)
                    and old.startswith(prefix)
                    and old.endswith(suffix)
                    and len(old) >= len(prefix) + len(suffix)
                )
            else:
                keeps_frame = type(old) is type(new)
            if not keeps_frame:
                raise RegenerationRefused(
                    f"{field.where}: {ref}: {path_text(field.path)} holds a generated value, "
                    "and the new values change the text around it; re-rendering would rotate "
                    "it. Set it in the values (or in the override) to choose it explicitly"
                )
            manifest = _with_value(manifest, field.path, old)
        kept.append(manifest)
    return kept
