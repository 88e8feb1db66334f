"""Kubernetes label selectors and label syntax: parse once, match many times.

Placement and selector overrides pick clusters by their labels with the same language kubectl
speaks, so people do not learn a second one:

    env=prod        env==prod       env!=prod
    env in (a,b)    env notin (a,b)
    env             !canary
    comma = AND

An empty selector matches nothing here: a taskset placed with an empty selector and no explicit
clusters goes nowhere, rather than everywhere by accident. Errors name the character position.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import msgspec

from taskset.errors import FleetbusError

Operator = Literal["=", "!=", "in", "notin", "exists", "!"]

_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KEY_CHARS = re.compile(r"[A-Za-z0-9_./-]+")
_VALUE_CHARS = re.compile(r"[A-Za-z0-9_.-]*")


class InvalidSelector(FleetbusError):
    def __init__(self, text: str, position: int, reason: str) -> None:
        self.text = text
        self.position = position
        super().__init__(f"invalid selector {text!r} at position {position + 1}: {reason}")


class InvalidLabel(FleetbusError):
    pass


class Requirement(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        match self.operator:
            case "=":
                return labels.get(self.key) == self.values[0]
            case "!=":
                return labels.get(self.key) != self.values[0]
            case "in":
                return self.key in labels and labels[self.key] in self.values
            case "notin":
                return labels.get(self.key) not in self.values
            case "exists":
                return self.key in labels
            case "!":
                return self.key not in labels

    def __str__(self) -> str:
        match self.operator:
            case "=" | "!=":
                return f"{self.key}{self.operator}{self.values[0]}"
            case "in" | "notin":
                return f"{self.key} {self.operator} ({','.join(self.values)})"
            case "exists":
                return self.key
            case "!":
                return f"!{self.key}"


class Selector(msgspec.Struct, frozen=True, kw_only=True):
    """A conjunction of requirements. No requirements: matches no cluster."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return bool(self.requirements) and all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a Kubernetes label key, or None if it is one."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return "the prefix before '/' is empty"
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"prefix {prefix!r} must be a DNS subdomain (lowercase, '.', '-'), at most 253"
    if not name:
        return "the name is empty"
    if len(name) > 63:
        return f"the name is {len(name)} characters long, the limit is 63"
    if not _NAME.match(name):
        return "use letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a Kubernetes label value, or None if it is one."""
    if value == "":
        return None
    if len(value) > 63:
        return f"it is {len(value)} characters long, the limit is 63"
    if not _NAME.match(value):
        return "use letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
    return None


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Return `labels` as a plain dict if every key and value is valid, else raise InvalidLabel."""
    for key, value in labels.items():
        problem = label_key_problem(key)
        if problem:
            raise InvalidLabel(f"invalid label key {key!r}: {problem}")
        problem = label_value_problem(value)
        if problem:
            raise InvalidLabel(f"invalid value {value!r} for label {key!r}: {problem}")
    return dict(labels)


def parse_selector(text: str) -> Selector:
    """Parse a label selector; raise `InvalidSelector` naming the position of the mistake."""
    return _Parser(text).parse()


def selector_matches(text: str, labels: Mapping[str, str]) -> bool:
    return parse_selector(text).matches(labels)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, reason: str, position: int | None = None) -> InvalidSelector:
        return InvalidSelector(self.text, self.pos if position is None else position, reason)

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_spaces()
        return self.pos >= len(self.text)

    def peek(self, token: str) -> bool:
        self.skip_spaces()
        return self.text.startswith(token, self.pos)

    def expect(self, token: str, what: str) -> None:
        if not self.peek(token):
            found = self.text[self.pos] if self.pos < len(self.text) else "the end"
            raise self.fail(f"expected {what}, found {found!r}")
        self.pos += len(token)

    def parse(self) -> Selector:
        if self.at_end():
            raise self.fail("the selector is empty")
        requirements = [self.requirement()]
        while not self.at_end():
            self.expect(",", "',' between requirements")
            if self.at_end():
                raise self.fail("a requirement must follow ','")
            requirements.append(self.requirement())
        return Selector(requirements=tuple(requirements))

    def key(self) -> str:
        self.skip_spaces()
        start = self.pos
        match = _KEY_CHARS.match(self.text, self.pos)
        if not match:
            raise self.fail("expected a label key")
        key = match.group(0)
        problem = label_key_problem(key)
        if problem:
            raise self.fail(f"invalid label key {key!r}: {problem}", start)
        self.pos = match.end()
        return key

    def value(self) -> str:
        self.skip_spaces()
        start = self.pos
        match = _VALUE_CHARS.match(self.text, self.pos)
        value = match.group(0) if match else ""
        problem = label_value_problem(value)
        if problem:
            raise self.fail(f"invalid label value {value!r}: {problem}", start)
        self.pos += len(value)
        return value

    def requirement(self) -> Requirement:
        if self.peek("!") and not self.peek("!="):
            self.pos += 1
            return Requirement(key=self.key(), operator="!")
        key = self.key()
        if self.at_end() or self.peek(","):
            return Requirement(key=key, operator="exists")
        if self.peek("=="):
            self.pos += 2
            return Requirement(key=key, operator="=", values=(self.value(),))
        if self.peek("!="):
            self.pos += 2
            return Requirement(key=key, operator="!=", values=(self.value(),))
        if self.peek("="):
            self.pos += 1
            return Requirement(key=key, operator="=", values=(self.value(),))
        if self.peek("notin") and self._word_ends("notin"):
            self.pos += len("notin")
            return Requirement(key=key, operator="notin", values=self.value_set())
        if self.peek("in") and self._word_ends("in"):
            self.pos += len("in")
            return Requirement(key=key, operator="in", values=self.value_set())
        raise self.fail("expected '=', '==', '!=', 'in', 'notin', ',' or the end")

    def _word_ends(self, word: str) -> bool:
        end = self.pos + len(word)
        return end >= len(self.text) or self.text[end] in " \t("

    def value_set(self) -> tuple[str, ...]:
        self.expect("(", "'(' to open the set of values")
        values = [self.value()]
        while self.peek(","):
            self.pos += 1
            values.append(self.value())
        self.expect(")", "',' or ')' in the set of values")
        return tuple(sorted(set(values)))
