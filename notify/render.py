"""What a receiver gets for one event, and the signature that proves it came from this hub (pure).

Three sinks:

- `json`: `{"id", "type", "severity", "occurred_at", "summary", "taskset", "clusters",
  "stream", "seq", "event"}` with content type `application/json`;
- `cloudevents`: a CloudEvents 1.0 event in structured mode (`application/cloudevents+json`):
  `specversion`, `id` (the event id), `source` (`/fleetbus/<stream>`), `type`
  (`io.fleetbus.<EventType>`), `subject` (the aggregate), `time`, `datacontenttype` and the
  same `data` as the `json` sink;
- `slack`: `{"text": "<summary>"}`, which a Slack (or Mattermost, Rocket.Chat) incoming webhook
  posts as a message.

Every request carries `X-Fleetbus-Event-Id` (receivers drop repeats by it: delivery is at least
once), `X-Fleetbus-Timestamp` (Unix seconds) and `X-Fleetbus-Signature: sha256=<hex>`, the
HMAC-SHA256 of `<timestamp>.<body>` under the subscription's key.

An event's `event` object leaves out what may hold secrets: a taskset's body, Helm values and
override patches are never sent.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from events.catalog import Event
from notify.model import Sink, clusters_of, severity_of, taskset_of

SIGNATURE_HEADER: Final = "X-Fleetbus-Signature"
TIMESTAMP_HEADER: Final = "X-Fleetbus-Timestamp"
EVENT_ID_HEADER: Final = "X-Fleetbus-Event-Id"
WITHHELD_FIELDS: Final = frozenset({"body", "values", "patches", "chart_archive"})
"""Event fields never sent to a receiver: they may carry secrets or whole charts."""


@dataclass(frozen=True)
class Notification:
    """One event as it leaves the hub, before it is rendered for a sink."""

    event: Event
    stream: str
    seq: int


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str]


def summary_of(event: Event) -> str:
    """One line a person reads in a chat channel."""
    kind = type(event).__name__
    taskset = taskset_of(event)
    clusters = clusters_of(event)
    where = f" on {', '.join(clusters[:5])}{' …' if len(clusters) > 5 else ''}" if clusters else ""
    version = getattr(event, "taskset_version", 0)
    what = f" {taskset}{f' v{version}' if version else ''}" if taskset else ""
    reason = getattr(event, "reason", "")
    because = f": {reason}" if isinstance(reason, str) and reason else ""
    return f"[{severity_of(event)}] {kind}{what}{where}{because}"


def event_data(event: Event) -> dict[str, Any]:
    """The event's own fields, less those that may hold secrets."""
    raw = msgspec.to_builtins(event)
    assert isinstance(raw, dict)
    return {key: value for key, value in raw.items() if key not in WITHHELD_FIELDS}


def data_of(notification: Notification) -> dict[str, Any]:
    event = notification.event
    return {
        "id": event.id,
        "type": type(event).__name__,
        "severity": severity_of(event),
        "occurred_at": event.occurred_at.isoformat(),
        "summary": summary_of(event),
        "taskset": taskset_of(event),
        "clusters": clusters_of(event),
        "stream": notification.stream,
        "seq": notification.seq,
        "event": event_data(event),
    }


def body_of(sink: Sink, notification: Notification) -> tuple[bytes, str]:
    """The request body for `sink` and its content type."""
    if sink == "slack":
        return msgspec.json.encode({"text": summary_of(notification.event)}), "application/json"
    data = data_of(notification)
    if sink == "json":
        return msgspec.json.encode(data), "application/json"
    event = notification.event
    cloud = {
        "specversion": "1.0",
        "id": event.id,
        "source": f"/fleetbus/{notification.stream.lower()}",
        "type": f"io.fleetbus.{type(event).__name__}",
        "subject": data["taskset"] or ",".join(data["clusters"]) or event.aggregate,
        "time": event.occurred_at.isoformat(),
        "datacontenttype": "application/json",
        "data": data,
    }
    return msgspec.json.encode(cloud), "application/cloudevents+json; charset=utf-8"


def signature(key: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(key, `<timestamp>.<body>`)."""
    mac = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def request_for(sink: Sink, notification: Notification, key: str, timestamp: int) -> Request:
    body, content_type = body_of(sink, notification)
    return Request(
        body=body,
        headers={
            "Content-Type": content_type,
            "User-Agent": "fleetbus-notify/1",
            EVENT_ID_HEADER: notification.event.id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(key, timestamp, body),
        },
    )
