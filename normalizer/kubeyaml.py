"""YAML read the way Kubernetes and Helm read it: sigs.k8s.io/yaml on top of go-yaml v2.

PyYAML implements YAML 1.1 as written; Kubernetes, kubectl and Helm do not. They convert YAML
to JSON with sigs.k8s.io/yaml, whose scalars are resolved by go-yaml v2's own rules, and those
differ from YAML 1.1 in ways that change real manifests:

- no base-60 numbers: `12:30` stays the string "12:30" (YAML 1.1 reads 750);
- no `=` value tag: a plain `=` (an enum member in a CRD) is the string "=";
- `0o17`, `0x1F`, `0b101`, `017` and `1_000` are integers, `08` is the float 8;
- `y`, `Y`, `n`, `N`, `yes`, `on`, `off` and friends are booleans, keys included (a key `on:`
  becomes "true");
- timestamps stay the text they were written as, `!!binary` is decoded to its text;
- integers beyond int64 become uint64, then floats; floats that overflow stay strings;
- a float with an integral value is written by JSON without a fraction (`1e3` is 1000), so it
  reaches the apiserver as an integer; non-finite floats cannot be written at all.

The parsing itself stays in libyaml (PyYAML's C parser): only resolution and construction of
scalars are ours, so the reader keeps libyaml's speed. Duplicate keys in a mapping are an error
naming the line (`YAMLToJSONStrict` refuses them; the apiserver's strict field validation too).

`infra/yamloracle` runs the real sigs.k8s.io/yaml; `tests/integration/test_yaml_oracle.py`
compares this module with it over a table of tricky scalars and every manifest of the corpus.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from decimal import Decimal
from typing import Any

import yaml

from normalizer.errors import InvalidYaml

_CLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

PLAIN_TAG = "tag:fleetbus.dev,2026:go-yaml-plain"
"""The tag every plain (unquoted, untagged) scalar gets; its constructor applies go-yaml v2."""
MERGE_TAG = "tag:yaml.org,2002:merge"
STR_TAG = "tag:yaml.org,2002:str"

_BOOLS_AND_NULLS: dict[str, Any] = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "on", "On", "ON"), True),
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "off", "Off", "OFF"), False),
    **dict.fromkeys(("false", "False", "FALSE"), False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
}
_NON_FINITE: dict[str, float] = {
    **dict.fromkeys((".nan", ".NaN", ".NAN"), float("nan")),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), float("inf")),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), float("-inf")),
}
_NUMBER_START = frozenset("+-0123456789")
_YAML_STYLE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_DOT_FLOAT = re.compile(r"\.[0-9]+([eE][-+]?[0-9]+)?")
_GO_INT = re.compile(
    r"(?P<sign>[-+]?)(?:0[xX](?P<hex>[0-9a-fA-F]+)|0[oO](?P<oct>[0-7]+)|0[bB](?P<bin>[01]+)"
    r"|(?P<legacy_oct>0[0-7]*)|(?P<dec>[1-9][0-9]*))"
)
_BINARY_DIGITS = re.compile(r"[-+]?[01]+")
INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
JSON_PLAIN_INTEGER_LIMIT = 1e21
"""Go's JSON encoder writes floats below this magnitude without an exponent."""


def _go_parse_int(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64), then strconv.ParseUint(text, 0, 64), as go-yaml tries."""
    match = _GO_INT.fullmatch(text)
    if match is None:
        return None
    if match["hex"] is not None:
        value = int(match["hex"], 16)
    elif match["oct"] is not None:
        value = int(match["oct"], 8)
    elif match["bin"] is not None:
        value = int(match["bin"], 2)
    elif match["legacy_oct"] is not None:
        value = int(match["legacy_oct"], 8)
    else:
        value = int(match["dec"])
    if match["sign"] == "-":
        value = -value
    if INT64_MIN <= value <= INT64_MAX:
        return value
    if match["sign"] == "" and value <= UINT64_MAX:
        return value
    return None


def json_number(value: float) -> int | float:
    """What a float becomes after Go's JSON encoding and Kubernetes' decoding of it.

    Go writes an integral float below 1e21 without a fraction, and Kubernetes reads that back
    as an integer when it fits 64 bits; beyond, it stays a float (the same float64).
    """
    if value.is_integer() and abs(value) < JSON_PLAIN_INTEGER_LIMIT:
        integer = int(Decimal(repr(value)))
        if INT64_MIN <= integer <= UINT64_MAX:
            return integer
    return value


def resolve_plain(text: str) -> Any:
    """The value go-yaml v2 gives a plain scalar decoded into `interface{}`."""
    if text in _BOOLS_AND_NULLS:
        return _BOOLS_AND_NULLS[text]
    if text in _NON_FINITE:
        return _NON_FINITE[text]
    first = text[0]
    if first == ".":
        if _DOT_FLOAT.fullmatch(text):
            number = float(text)
            if number not in (float("inf"), float("-inf")):
                return number
        return text
    if first not in _NUMBER_START:
        return text
    plain = text.replace("_", "")
    integer = _go_parse_int(plain)
    if integer is not None:
        return integer
    if _YAML_STYLE_FLOAT.fullmatch(plain):
        number = float(plain)
        if number in (float("inf"), float("-inf")):
            return text  # strconv.ParseFloat reports a range error; go-yaml keeps the text
        return number
    for prefix, sign in (("0b", ""), ("-0b", "-")):
        digits = plain[len(prefix) :]
        if plain.startswith(prefix) and _BINARY_DIGITS.fullmatch(digits):
            value = int(sign + digits, 2) if not digits.startswith(("-", "+")) else None
            if value is None:
                value = int(digits, 2) * (-1 if sign else 1)
            if INT64_MIN <= value <= INT64_MAX:
                return value
    return text


def _go_float32_text(value: float) -> str:
    """strconv.FormatFloat(value, 'g', -1, 32): how sigs.k8s.io/yaml names a float key."""
    try:
        single = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        single = value * float("inf")
    if single in (float("inf"), float("-inf")):
        return ".inf" if single > 0 else "-.inf"  # sigs.k8s.io/yaml's names for infinities
    if single == 0:
        return "-0" if str(single).startswith("-") else "0"
    for precision in range(10):
        scientific = f"{single:.{precision}e}"
        if struct.unpack("f", struct.pack("f", float(scientific)))[0] == single:
            break
    mantissa, exponent_text = scientific.split("e")
    negative = mantissa.startswith("-")
    digits = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    exponent = int(exponent_text)
    sign = "-" if negative else ""
    if exponent < -4 or exponent >= 6:  # Go's %g threshold for the shortest form
        fraction = f".{digits[1:]}" if len(digits) > 1 else ""
        return f"{sign}{digits[0]}{fraction}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    point = exponent + 1
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def key_text(key: Any, line: int, source: str) -> str:
    """A mapping key as the JSON object key sigs.k8s.io/yaml makes of it."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int):
        if not INT64_MIN <= key <= INT64_MAX:
            raise InvalidYaml(
                source, line, f"the mapping key {key} is beyond int64; Kubernetes cannot read it"
            )
        return str(key)
    if isinstance(key, float):
        if key != key:
            return ".nan"
        if key in (float("inf"), float("-inf")):
            return ".inf" if key > 0 else "-.inf"
        return _go_float32_text(key)
    if key is None:
        raise InvalidYaml(source, line, "a mapping key is null; JSON keys must be strings")
    raise InvalidYaml(
        source, line, f"a mapping key is a {type(key).__name__}; JSON keys must be strings"
    )


class KubernetesYamlLoader(_CLoader):  # type: ignore[misc]
    """libyaml's parser and composer; `JsonBuilder` turns its nodes into values (see above).

    Every plain scalar is tagged `PLAIN_TAG` (`<<` stays a merge key), so go-yaml's rules,
    not YAML 1.1's, decide what it means.
    """

    source = "<yaml>"
    first_line = 1

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            return MERGE_TAG if value == "<<" else PLAIN_TAG
        return str(super().resolve(kind, value, implicit))


def _construct_binary(loader: KubernetesYamlLoader, node: yaml.ScalarNode) -> str:
    try:
        decoded = base64.b64decode("".join(str(node.value).split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidYaml(
            loader.source,
            loader.first_line + node.start_mark.line,
            f"!!binary value is not base64: {e}",
        ) from e
    return decoded.decode("utf-8", errors="replace")


_CDumper: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_GO_TAGS = {bool: "tag:yaml.org,2002:bool", int: "tag:yaml.org,2002:int"}


class KubernetesYamlDumper(_CDumper):  # type: ignore[misc]
    """libyaml's emitter, quoting every string go-yaml would not read back as that string.

    PyYAML quotes what YAML 1.1 would misread (`yes`, `1:20`); go-yaml misreads more (`y`,
    `0o17`, `1_000`), and those must be quoted too, or the YAML fleetbus writes would change
    meaning when Kubernetes or Helm reads it. Multi-line strings are written as block
    literals (`|`) so scripts and configuration files read as they were written.
    """

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            read_back = resolve_plain(value)
            if not isinstance(read_back, str) or value == "<<":
                if read_back is None:
                    return "tag:yaml.org,2002:null"
                if isinstance(read_back, float):
                    return "tag:yaml.org,2002:float"
                return _GO_TAGS.get(type(read_back), MERGE_TAG)
        return str(super().resolve(kind, value, implicit))


def _represent_text(dumper: KubernetesYamlDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    node: yaml.ScalarNode = dumper.represent_scalar(STR_TAG, value, style=style)
    return node


KubernetesYamlDumper.add_representer(str, _represent_text)


def dump_yaml(data: Any) -> str:
    """`data` as YAML that Kubernetes and Helm read back as exactly `data`."""
    text: str = yaml.dump(
        data,
        Dumper=KubernetesYamlDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    return text


MAX_DOCUMENT_VALUES = 1_000_000
"""More values than any Kubernetes object can hold (etcd keeps at most ~1.5 MB per object)."""
_SCALAR_TAGS = {
    STR_TAG: "str",
    "tag:yaml.org,2002:int": "int",
    "tag:yaml.org,2002:float": "float",
    "tag:yaml.org,2002:bool": "bool",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "str",
}
_MAPPING_TAG = "tag:yaml.org,2002:map"
_SEQUENCE_TAG = "tag:yaml.org,2002:seq"
_BINARY_TAG = "tag:yaml.org,2002:binary"


class JsonBuilder:
    """A composed YAML document (libyaml's nodes) straight to JSON-shaped data.

    One walk does what PyYAML's constructor and a conversion pass would do in two: scalars
    by go-yaml v2's rules, keys named as sigs.k8s.io/yaml names them, merges applied,
    repeated keys refused, integral floats as integers. Aliases are expanded as they are met
    and every value counts against `MAX_DOCUMENT_VALUES`, so a "billion laughs" document
    stops early instead of growing without end.
    """

    def __init__(self, loader: KubernetesYamlLoader) -> None:
        self.loader = loader
        self.remaining = MAX_DOCUMENT_VALUES

    def _fail(self, node: yaml.Node, problem: str) -> InvalidYaml:
        return InvalidYaml(
            self.loader.source, self.loader.first_line + node.start_mark.line, problem
        )

    def build(self, node: yaml.Node) -> Any:
        try:
            return self._value(node)
        except RecursionError:
            raise self._fail(node, "the document nests too deeply (a recursive alias?)") from None

    def _value(self, node: yaml.Node) -> Any:
        self.remaining -= 1
        if self.remaining < 0:
            raise self._fail(
                node,
                f"the document expands to more than {MAX_DOCUMENT_VALUES:,} values "
                "(through YAML aliases?); no Kubernetes object is that large",
            )
        kind = type(node)
        if kind is yaml.ScalarNode:
            value = self._scalar(node)
            if isinstance(value, float):
                if value != value or value in (float("inf"), float("-inf")):
                    raise self._fail(node, f"{node.value} is not a number JSON can carry; quote it")
                return json_number(value)
            return value
        if kind is yaml.SequenceNode:
            if node.tag != _SEQUENCE_TAG:
                raise self._fail(node, f"unsupported YAML tag {node.tag} on a sequence")
            return [self._value(child) for child in node.value]
        if kind is not yaml.MappingNode or node.tag != _MAPPING_TAG:
            raise self._fail(node, f"unsupported YAML tag {node.tag} on a mapping")
        assert isinstance(node, yaml.MappingNode)
        return self._mapping(node)

    def _scalar(self, node: yaml.Node) -> Any:
        tag = node.tag
        if tag == PLAIN_TAG:
            return resolve_plain(node.value)
        if tag == _BINARY_TAG:
            assert isinstance(node, yaml.ScalarNode)
            return _construct_binary(self.loader, node)
        expected = _SCALAR_TAGS.get(tag)
        if expected is None:
            raise self._fail(node, f"unsupported YAML tag {tag}")
        if expected == "str":
            return node.value
        value = _NON_FINITE.get(node.value, resolve_plain(node.value))
        matches = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "null": value is None,
        }[expected]
        if not matches:
            raise self._fail(node, f"!!{expected} {node.value!r} is not a {expected}")
        return float(value) if expected == "float" else value

    def _mapping(self, node: yaml.MappingNode) -> dict[str, Any]:
        self.loader.flatten_mapping(node)
        mapping: dict[str, Any] = {}
        seen: dict[tuple[type, Any], int] = {}
        first_line = self.loader.first_line
        for key_node, value_node in node.value:
            line = first_line + key_node.start_mark.line
            if type(key_node) is not yaml.ScalarNode:
                raise self._fail(key_node, "a mapping key is a list or a mapping")
            key = self._scalar(key_node)
            identity = (type(key), key)
            if identity in seen:
                raise self._fail(
                    key_node,
                    f"duplicate key {key_text(key, line, self.loader.source)!r} in a mapping "
                    f"(first on line {seen[identity]}); Kubernetes refuses objects with "
                    "repeated fields",
                )
            seen[identity] = line
            mapping[key_text(key, line, self.loader.source)] = self._value(value_node)
        return mapping
