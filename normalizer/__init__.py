"""The normalizer: Helm charts, Kustomize overlays and plain YAML become one Taskset.

`normalize` is the entry point; `normalizer.helm.render_chart_archive` re-renders a published
chart archive with other values. Importing this package does not load the Helm engine.
"""

from normalizer.sources import (
    FORMATS,
    Format,
    NormalizedSource,
    NormalizeOptions,
    detect_format,
    normalize,
)
from normalizer.values import load_values_file, merge_values

__all__ = [
    "FORMATS",
    "Format",
    "NormalizeOptions",
    "NormalizedSource",
    "detect_format",
    "load_values_file",
    "merge_values",
    "normalize",
]
