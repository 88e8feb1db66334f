"""Events to bytes and back: JSON on the wire (readable in replay), one decoder for the catalog.

Older versions of an event are upcast on their raw dict before decoding: an upcaster is a pure
function `dict -> dict` registered for `(type, version)` that returns the dict of `version + 1`.
Every version ever written keeps a fixture under `tests/fixtures/events/` that must still decode.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import orjson

from events.catalog import EVENT_TYPES, AnyEvent, Event
from events.errors import UndecodableEvent

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def cluster_task_scheduled_v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """ClusterTaskScheduled 1 named one cluster; 2 names a chunk of them: a chunk of one."""
    part: dict[str, Any] = {
        name: raw.pop(name)
        for name in ("cluster", "taskset_version", "generation", "digest", "wave", "removed")
        if name in raw
    }
    part["overrides"] = raw.pop("overrides", [])
    raw["clusters"] = [part]
    return raw


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("ClusterTaskScheduled", 1): cluster_task_scheduled_v1_to_v2,
}
"""(event type, version it reads) -> function producing the next version's dict."""


class _Header(msgspec.Struct):
    type: str
    version: int = 1


_ENCODER = msgspec.json.Encoder()

_MSGSPEC_INPUT_ERRORS = (UnicodeDecodeError, RecursionError)
"""What msgspec raises, besides DecodeError, for bad UTF-8 in a string and for nesting too deep."""


def encode_event(event: Event) -> bytes:
    return _ENCODER.encode(event)


class EventDecoder:
    """Decodes any event of the catalog, upcasting older versions first."""

    def __init__(self, upcasters: Mapping[tuple[str, int], Upcaster] | None = None) -> None:
        self._upcasters = UPCASTERS if upcasters is None else upcasters
        self._header = msgspec.json.Decoder(_Header)
        self._decoder = msgspec.json.Decoder(AnyEvent)
        self._current = {tag: current_version_of(cls) for tag, cls in EVENT_TYPES.items()}

    def current_version(self, type_name: str) -> int:
        return self._current[type_name]

    def decode(self, data: bytes, *, seq: int | None = None, subject: str = "") -> Event:
        try:
            header = self._header.decode(data)
        except (msgspec.DecodeError, *_MSGSPEC_INPUT_ERRORS) as e:
            raise UndecodableEvent(f"not an event envelope: {e}", seq, subject) from e
        current = self._current.get(header.type)
        if current is None:
            raise UndecodableEvent(f"unknown event type {header.type!r}", seq, subject)
        try:
            if header.version == current:
                event: Event = self._decoder.decode(data)
                return event
            if header.version > current:
                raise UndecodableEvent(
                    f"{header.type} version {header.version} is newer than this build "
                    f"understands (up to {current}); upgrade fleetbus",
                    seq,
                    subject,
                )
            raw = orjson.loads(data)
            version = header.version
            while version < current:
                upcast = self._upcasters.get((header.type, version))
                if upcast is None:
                    raise UndecodableEvent(
                        f"no upcaster for {header.type} version {version}", seq, subject
                    )
                raw = upcast(raw)
                version += 1
                raw["version"] = version
            upcast_event: Event = msgspec.convert(raw, AnyEvent)
            return upcast_event
        except (
            msgspec.ValidationError,
            msgspec.DecodeError,
            orjson.JSONDecodeError,
            *_MSGSPEC_INPUT_ERRORS,
        ) as e:
            raise UndecodableEvent(f"{header.type}: {e}", seq, subject) from e


@functools.cache
def current_version_of(cls: type[Event]) -> int:
    """The version new events of `cls` are written at: the default of its `version` field.

    Cached: reading a Struct's fields evaluates its annotations, and every `EventStore` (one
    per simulated cluster in a large fleet) builds a decoder that asks for every type."""
    for field in msgspec.structs.fields(cls):
        if field.name == "version":
            return int(field.default)
    raise TypeError(f"{cls.__name__} has no version field")
