"""Helm values given at publish time: read from files, merged in order like `helm -f a -f b`.

Later layers win; mappings merge key by key, anything else (lists included) is replaced whole.
A `null` is kept, not dropped: Helm reads a user-supplied `null` as "remove this default", so
it must survive until the chart's defaults are coalesced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from normalizer.documents import parse_single_mapping, read_text
from normalizer.errors import InvalidValues, SourceNotFound


def load_values_file(path: Path) -> dict[str, Any]:
    """The values mapping in a YAML file."""
    try:
        text = read_text(path)
    except SourceNotFound as e:
        raise InvalidValues(f"values file {e}") from e
    return parse_single_mapping(text, str(path))


def merge_values(layers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Deep-merge `layers`, later ones winning."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, layer)
    return merged


def _merge(base: Mapping[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in layer.items():
        current = result.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            result[key] = _merge(current, value)
        else:
            result[key] = value
    return result
