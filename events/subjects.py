"""Subject names. Every fleetbus subject lives under `fleet.`; names are single subject tokens.

Taskset, cluster and override names are DNS-1123 labels (see `taskset.names`), so they never
contain `.`, `*`, `>` or whitespace and are always safe as one token.
"""

from __future__ import annotations

EVENTS_PREFIX = "fleet.evt"
DESIRED_PREFIX = "fleet.desired"
REPORT_PREFIX = "fleet.report"
INVENTORY_PREFIX = "fleet.inventory"
SNAPSHOT_PREFIX = "fleet.snapshot"
ARCHIVE_PREFIX = "fleet.archive"
"""`fleet.archive.segment.<index>`: one archive segment of EVENTS per subject (EVENTS_ARCHIVE)."""
ARCHIVE_EVENTS_SUBJECT = "fleet.evt.archive.events"
"""Where `EventsArchived` is appended: the live log's link to the archive."""
KEYS_PREFIX = "fleet.keys"
"""`fleet.keys.<cluster>`: an edge asks the hub for one of its own data keys (request/reply)."""


def event_subject(aggregate: str, aggregate_id: str) -> str:
    return f"{EVENTS_PREFIX}.{aggregate}.{aggregate_id}"


def desired_subject(cluster: str, taskset: str) -> str:
    return f"{DESIRED_PREFIX}.{cluster}.{taskset}"


def desired_filter(cluster: str) -> str:
    return f"{DESIRED_PREFIX}.{cluster}.>"


def report_subject(cluster: str, taskset: str) -> str:
    return f"{REPORT_PREFIX}.{cluster}.{taskset}"


def report_filter(cluster: str) -> str:
    return f"{REPORT_PREFIX}.{cluster}.>"


def inventory_subject(cluster: str) -> str:
    return f"{INVENTORY_PREFIX}.{cluster}"


def keys_subject(cluster: str) -> str:
    return f"{KEYS_PREFIX}.{cluster}"


ARCHIVE_SEGMENT_FILTER = f"{ARCHIVE_PREFIX}.segment.>"


def archive_segment_subject(index: int) -> str:
    return f"{ARCHIVE_PREFIX}.segment.{index:010d}"


def archive_index_subject(index: int) -> str:
    """The subjects segment `index` holds: what lets a filtered read skip it unread."""
    return f"{ARCHIVE_PREFIX}.subjects.{index:010d}"
