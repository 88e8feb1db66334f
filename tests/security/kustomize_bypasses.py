"""Remote Kustomize references written to slip past a look-for-URLs check, in every field.

`BYPASSES` are the spellings that once passed (mixed-case scp-like git addresses and hosts, a
scheme with one slash, `host:org/repo`) and their relatives; `FIELDS` puts a reference into
each field of a kustomization that kustomize loads something from. `overlay_with` writes one
such overlay: a test uploads or builds it and expects it refused, naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

BYPASSES = (
    "Git@host:org/repo",
    "GitHub.com/org/repo//x?ref=main",
    "github.com:org/repo",
    "HTTPS:/host/x.yaml",
    "https://host/x.yaml",
    "hTtP://127.0.0.1:9/x.yaml",
    "git::https://host/org/repo",
    "ssh://git@host/org/repo",
    "file:///etc/hostname",
    "gitlab.com/org/repo",
    "host/org/repo.git",
    "org/_git/repo",
    "//host/x.yaml",
    "/etc/hostname",
    "~/secrets.yaml",
    "x.yaml?ref=main",
    "%2e%2e/x.yaml",
    "git@host:org/repo",
    "GITHUB.COM/org/repo",
)


@dataclass(frozen=True)
class Field:
    id: str
    place: Callable[[str], dict[str, object]]
    """The kustomization with the reference in this field."""
    names: str
    """How the refusal names the field."""


FIELDS = (
    Field("resources", lambda ref: {"resources": ["cm.yaml", ref]}, "resources[1]"),
    Field("bases", lambda ref: {"bases": [ref]}, "bases[0]"),
    Field("components", lambda ref: {"components": [ref]}, "components[0]"),
    Field("crds", lambda ref: {"resources": ["cm.yaml"], "crds": [ref]}, "crds[0]"),
    Field(
        "configurations",
        lambda ref: {"resources": ["cm.yaml"], "configurations": [ref]},
        "configurations[0]",
    ),
    Field(
        "openapi", lambda ref: {"resources": ["cm.yaml"], "openapi": {"path": ref}}, "openapi.path"
    ),
    Field(
        "patches",
        lambda ref: {"resources": ["cm.yaml"], "patches": [{"path": ref}]},
        "patches[0].path",
    ),
    Field(
        "patchesStrategicMerge",
        lambda ref: {"resources": ["cm.yaml"], "patchesStrategicMerge": [ref]},
        "patchesStrategicMerge[0]",
    ),
    Field(
        "patchesJson6902",
        lambda ref: {"resources": ["cm.yaml"], "patchesJson6902": [{"path": ref}]},
        "patchesJson6902[0].path",
    ),
    Field(
        "replacements",
        lambda ref: {"resources": ["cm.yaml"], "replacements": [{"path": ref}]},
        "replacements[0].path",
    ),
    Field(
        "configMapGenerator-files",
        lambda ref: {"configMapGenerator": [{"name": "g", "files": [f"key={ref}"]}]},
        "configMapGenerator[0].files[0]",
    ),
    Field(
        "secretGenerator-envs",
        lambda ref: {"secretGenerator": [{"name": "g", "envs": [ref]}]},
        "secretGenerator[0].envs[0]",
    ),
    Field(
        "generators",
        lambda ref: {"resources": ["cm.yaml"], "generators": [ref]},
        "generators[0]",
    ),
    Field(
        "transformers-inline-config",
        lambda ref: {
            "resources": ["cm.yaml"],
            "transformers": [
                yaml.safe_dump(
                    {
                        "apiVersion": "builtin",
                        "kind": "PatchTransformer",
                        "metadata": {"name": "p"},
                        "path": ref,
                    }
                )
            ],
        },
        "transformers[0].path",
    ),
    Field(
        "validators",
        lambda ref: {"resources": ["cm.yaml"], "validators": [ref]},
        "validators[0]",
    ),
)

CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"


def overlay_with(root: Path, field: Field, reference: str) -> Path:
    """`root/overlay/` holding a ConfigMap and a kustomization with `reference` in `field`."""
    overlay = root / "overlay"
    overlay.mkdir(parents=True)
    (overlay / "cm.yaml").write_text(CONFIGMAP)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(field.place(reference)))
    return overlay
