"""Subscriptions as data, and which events each one wants (pure).

A subscription names a sink (`json`, `cloudevents` or `slack`) and filters. Every filter that is
set must match: the event's type is one of `event_types`, the taskset it is about is one of
`tasksets`, a cluster it names is one of `clusters`, and its severity is at least
`min_severity`. An empty filter matches everything; an event that names no taskset (or no
cluster) never matches a subscription filtered by taskset (or cluster).

The hub has no projects yet, so there is no project filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal
from urllib.parse import urlsplit

import msgspec

from events.catalog import (
    EVENT_TYPES,
    BlueprintRolloutHalted,
    ClusterHealthChanged,
    ClusterTaskHeld,
    ClusterTaskScheduled,
    Event,
    RolloutAdvanced,
    RolloutHalted,
)
from notify.errors import InvalidSubscription
from taskset.errors import InvalidName
from taskset.names import check_name
from taskset.projects import check_project_name, project_of

Sink = Literal["json", "cloudevents", "slack"]
Severity = Literal["info", "warning", "error"]
SINKS: Final = ("json", "cloudevents", "slack")
SEVERITIES: Final = ("info", "warning", "error")
MAX_FILTER_ITEMS = 100
MAX_URL_LENGTH = 2048

_SEVERITY_BY_TYPE: Final[dict[str, Severity]] = {
    "TaskFailed": "error",
    "RolloutHalted": "error",
    "BlueprintRolloutHalted": "error",
    "ClusterTaskRefused": "error",
    "DriftDetected": "warning",
    "ClusterDeregistered": "warning",
    "AntiEntropyRepaired": "warning",
}


def severity_of(event: Event) -> Severity:
    """How much an event asks for attention: failures and halts are errors, drift a warning."""
    if isinstance(event, ClusterTaskHeld):
        return "warning" if event.hold == "Blocked" else "info"
    if isinstance(event, ClusterHealthChanged):
        return "info" if event.healthy else "warning"
    return _SEVERITY_BY_TYPE.get(type(event).__name__, "info")


def clusters_of(event: Event) -> list[str]:
    """The clusters an event is about (a rollout's wave or its failed clusters included)."""
    named: list[str] = []
    cluster = getattr(event, "cluster", "")
    if isinstance(cluster, str) and cluster:
        named.append(cluster)
    if isinstance(event, RolloutAdvanced):
        named.extend(event.clusters)
    if isinstance(event, ClusterTaskScheduled):
        named.extend(event.names())
    if isinstance(event, RolloutHalted | BlueprintRolloutHalted):
        named.extend(event.failed)
    return named


def taskset_of(event: Event) -> str:
    taskset = getattr(event, "taskset", "")
    return taskset if isinstance(taskset, str) else ""


def projects_of(event: Event) -> set[str]:
    """The projects of the objects an event names (`taskset.projects`: from their full
    names); empty for an event about the whole hub."""
    named = [*clusters_of(event), taskset_of(event)]
    projects = {project_of(name) for name in named if name}
    project = getattr(event, "project", "")
    if isinstance(project, str) and project:
        projects.add(project)
    return projects


class Filters(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    event_types: list[str] = msgspec.field(default_factory=list)
    projects: list[str] = msgspec.field(default_factory=list)
    """Events about objects of these projects (an event about the whole hub matches none)."""
    tasksets: list[str] = msgspec.field(default_factory=list)
    clusters: list[str] = msgspec.field(default_factory=list)
    min_severity: Severity = "info"

    def matches(self, event: Event) -> bool:
        if self.event_types and type(event).__name__ not in self.event_types:
            return False
        if self.projects and not projects_of(event) & set(self.projects):
            return False
        if self.tasksets and taskset_of(event) not in self.tasksets:
            return False
        if self.clusters and not set(clusters_of(event)) & set(self.clusters):
            return False
        return SEVERITIES.index(severity_of(event)) >= SEVERITIES.index(self.min_severity)


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    """What may be shown of a subscription: never its URL's path or its HMAC key."""

    name: str
    sink: Sink
    endpoint: str
    """The receiver's scheme, host and port only: the rest of a webhook URL is a secret."""
    filters: Filters = msgspec.field(default_factory=Filters)
    created_at: datetime
    created_by: str = ""


class SubscriptionSecrets(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    hmac_key: str


def endpoint_of(url: str) -> str:
    """`https://host:port` of a webhook URL: what lists and logs may show of it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


def check_url(url: str) -> str:
    if len(url) > MAX_URL_LENGTH:
        raise InvalidSubscription("url", f"longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise InvalidSubscription("url", f"not a URL ({e})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidSubscription("url", "must start with https:// or http://")
    if not parts.hostname:
        raise InvalidSubscription("url", "names no host")
    if parts.username or parts.password:
        raise InvalidSubscription("url", "must not carry a user or password")
    return url


def check_filters(filters: Filters) -> Filters:
    for field, items in (
        ("event_types", filters.event_types),
        ("projects", filters.projects),
        ("tasksets", filters.tasksets),
        ("clusters", filters.clusters),
    ):
        if len(items) > MAX_FILTER_ITEMS:
            raise InvalidSubscription(field, f"more than {MAX_FILTER_ITEMS} entries")
    for event_type in filters.event_types:
        if event_type not in EVENT_TYPES:
            raise InvalidSubscription(
                "event_types",
                f"unknown event type {event_type!r} (known: {', '.join(sorted(EVENT_TYPES))})",
            )
    for project in filters.projects:
        try:
            check_project_name(project)
        except InvalidName as e:
            raise InvalidSubscription("projects", str(e)) from None
    for what, names in (("taskset", filters.tasksets), ("cluster", filters.clusters)):
        for name in names:
            try:
                check_name(what, name)
            except InvalidName as e:
                raise InvalidSubscription(f"{what}s", str(e)) from None
    return filters


def check_subscription_name(name: str) -> str:
    try:
        return check_name("subscription", name)
    except InvalidName as e:
        raise InvalidSubscription("name", str(e)) from None


@dataclass
class DeliveryState:
    """What `fleetbus notify status` shows of one subscription (since the hub started)."""

    delivered: int = 0
    failed_attempts: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    last_error_at: datetime | None = None
    last_delivered_at: datetime | None = None
    next_attempt_in_s: float = 0.0


@dataclass(frozen=True)
class SubscriptionStatus:
    subscription: Subscription
    state: DeliveryState
    pending: int
    """Events not yet delivered (nor found unwanted): waiting in the consumers, or being retried."""

    @property
    def health(self) -> str:
        if self.state.consecutive_failures:
            return "failing"
        return "ok"
