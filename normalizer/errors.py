"""Errors of the normalizer: everything wrong with a chart, an overlay or a YAML bundle.

`NormalizerError` is the root. Every message names where the problem is (file and line,
template, or object) and what to change, because it is shown to the person who wrote the
source, as one line, without a traceback. Helm's and kubectl's own errors are translated into
these at the adapter that calls them.
"""

from __future__ import annotations

from taskset.errors import FleetbusError


class NormalizerError(FleetbusError):
    """Root of every error raised by `normalizer`."""


class SourceNotFound(NormalizerError):
    """The path to normalize does not exist or cannot be read."""


class EmptySource(NormalizerError):
    """The source holds no Kubernetes object at all."""


class UnsupportedSource(NormalizerError):
    """An option or input that the chosen format cannot take (e.g. values for plain YAML)."""


class RefusedReference(NormalizerError):
    """A Kustomize reference the hub will not follow: remote, outside the upload, or unreadable.

    Names the kustomization file, the field with its position (`resources[2]`,
    `patches[0].path`) and the value, and says which rule it broke.
    """

    def __init__(self, file: str, field: str, value: str | None, rule: str) -> None:
        self.file = file
        self.field = field
        self.value = value
        self.rule = rule
        what = field if value is None else f"{field} {value!r}"
        super().__init__(f"{file}: {what} is refused: {rule}")


class InvalidYaml(NormalizerError):
    """Text that does not parse as YAML; names the file and line."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source = source
        self.line = line
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: invalid YAML: {problem}")


class InvalidObject(NormalizerError):
    """A document that is not an object fleetbus can apply; names the document and field."""

    def __init__(self, where: str, what: str, problem: str) -> None:
        self.where = where
        self.what = what
        self.problem = problem
        super().__init__(f"{where}: {what}: {problem}")


class UnknownPhase(InvalidObject):
    """A `fleetbus.io/phase` annotation naming no phase."""


class InvalidHook(InvalidObject):
    """Helm hook annotations (`helm.sh/hook`, weight, delete policy) that make no sense."""


class DuplicateObject(NormalizerError):
    """Two documents define the same object (API group, kind, namespace and name)."""


class MisplacedObject(NormalizerError):
    """An object sits in an earlier phase than the CRD of its kind or its Namespace."""


class InvalidValues(NormalizerError):
    """A values file that cannot be read or is not a mapping."""


class ChartNotLoadable(NormalizerError):
    """The path or archive is not a Helm chart Helm can load."""


class ValuesRejected(NormalizerError):
    """Values that do not fit the chart's `values.schema.json`; names the key."""


class ChartRenderFailed(NormalizerError):
    """A template failed to render (syntax error, `required` value missing, `fail`)."""


class KustomizeUnavailable(NormalizerError):
    """No kubectl to run `kubectl kustomize` with."""


class KustomizeFailed(NormalizerError):
    """`kubectl kustomize` refused the overlay; carries its error message."""


class RegenerationRefused(NormalizerError):
    """A re-render would replace a generated value (a password) that the previous version had."""


class InvalidTasksetSpec(NormalizerError):
    """A `fleetbus.yaml` (or publish fields) that cannot be applied; names the file and field."""
