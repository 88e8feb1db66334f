"""JetStream stream definitions of the hub (domain `hub`), as the server's own JSON config.

They are plain data so that what the hub creates can be read, diffed and tested without a
server. `events.store.ensure_streams` creates or updates them idempotently.
"""

from __future__ import annotations

from typing import Any

from events import subjects

HUB_DOMAIN = "hub"
EVENTS_STREAM = "EVENTS"
DESIRED_STREAM = "DESIRED"
REPORTS_STREAM = "REPORTS"
LEASES_STREAM = "LEASES"
SNAPSHOTS_STREAM = "SNAPSHOTS"
ARCHIVE_STREAM = "EVENTS_ARCHIVE"
TOKENS_STREAM = "TOKENS"
TOKENS_PREFIX = "fleet.token"
HUB_SECRETS_STREAM = "HUB_SECRETS"
HUB_SECRETS_PREFIX = "fleet.hubsecret"

NANOS = 1_000_000_000
DUPLICATE_WINDOW_S = 10 * 60
"""How long a retried append (same event id) is recognised and stored once."""

MAX_PAYLOAD = 8 * 1024 * 1024
"""The hub's nats-server `max_payload`: no single message (event, ClusterTask) may exceed it."""


def events_stream(replicas: int = 1, *, purgeable: bool = False) -> dict[str, Any]:
    """The append-only log: every publish, override, decision and registration.

    Messages can never be deleted one by one. Purging the oldest is denied too, unless the hub
    keeps a retention window (`purgeable`): then the archiver removes what it has archived
    (`events.archive`). NATS never lifts `deny_purge` from an existing stream, so the hub
    keeps whatever an existing EVENTS stream says (`MANAGED_ELSEWHERE`)."""
    return {
        "name": EVENTS_STREAM,
        "subjects": [f"{subjects.EVENTS_PREFIX}.>"],
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "num_replicas": replicas,
        "duplicate_window": DUPLICATE_WINDOW_S * NANOS,
        "allow_atomic": True,
        "allow_direct": True,
        "deny_delete": True,
        "deny_purge": not purgeable,
        "max_msg_size": MAX_PAYLOAD,
    }


def archive_stream(replicas: int = 1) -> dict[str, Any]:
    """Archive segments of EVENTS (`events.archive`): one message per segment, on its own
    subject, written once (`Nats-Expected-Last-Subject-Sequence: 0`), never deleted or purged;
    the segment is compressed already."""
    return {
        "name": ARCHIVE_STREAM,
        "subjects": [f"{subjects.ARCHIVE_PREFIX}.>"],
        "retention": "limits",
        "storage": "file",
        "discard": "new",
        "num_replicas": replicas,
        "max_msgs_per_subject": 1,
        "duplicate_window": DUPLICATE_WINDOW_S * NANOS,
        "allow_direct": True,
        "deny_delete": True,
        "deny_purge": True,
        "max_msg_size": MAX_PAYLOAD,
    }


def desired_stream(replicas: int = 1) -> dict[str, Any]:
    """Last value per (cluster, taskset): the ClusterTask every cluster should run."""
    return {
        "name": DESIRED_STREAM,
        "subjects": [f"{subjects.DESIRED_PREFIX}.>"],
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "num_replicas": replicas,
        "max_msgs_per_subject": 1,
        "duplicate_window": 2 * 60 * NANOS,
        "allow_direct": True,
        "allow_rollup_hdrs": True,
        "compression": "s2",
        "max_msg_size": MAX_PAYLOAD,
    }


def reports_stream(
    sources: list[dict[str, Any]] | None = None, replicas: int = 1
) -> dict[str, Any]:
    """Every cluster report: sourced from the outboxes of leaf edges, and published straight
    into the hub by clusters connected as clients (`fleet.report.<cluster>.>`).

    A leaf edge's reports are never stored twice: its connection may not publish on report
    subjects into the hub, so they arrive only as copies of its outbox.
    """
    config: dict[str, Any] = {
        "name": REPORTS_STREAM,
        "subjects": [f"{subjects.REPORT_PREFIX}.>"],
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "num_replicas": replicas,
        "duplicate_window": DUPLICATE_WINDOW_S * NANOS,
        "allow_direct": True,
        "max_msg_size": MAX_PAYLOAD,
    }
    if sources:
        config["sources"] = sources
    return config


def leases_stream(replicas: int = 1) -> dict[str, Any]:
    """Leader leases of hub services (one message per lease, expiring by per-message TTL)."""
    return {
        "name": LEASES_STREAM,
        "subjects": ["fleet.lease.>"],
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "num_replicas": replicas,
        "max_msgs_per_subject": 1,
        "allow_msg_ttl": True,
        "allow_direct": True,
        "duplicate_window": 5 * NANOS,
    }


def tokens_stream(replicas: int = 1) -> dict[str, Any]:
    """The API's tokens (`api.token_stream`), shared by every API replica: one message per
    token on `fleet.token.<id>` holding its record (the digest, never the token)."""
    return {
        "name": TOKENS_STREAM,
        "subjects": [f"{TOKENS_PREFIX}.>"],
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "num_replicas": replicas,
        "max_msgs_per_subject": 1,
        "allow_direct": True,
        "duplicate_window": 2 * 60 * NANOS,
    }


def hub_secrets_stream(replicas: int = 1) -> dict[str, Any]:
    """What every hub process needs to sign with (the CA, the NATS operator and accounts),
    each file sealed with the hub's data key (`fleetbus.hub_secrets`): one message per file."""
    return {
        "name": HUB_SECRETS_STREAM,
        "subjects": [f"{HUB_SECRETS_PREFIX}.>"],
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "num_replicas": replicas,
        "max_msgs_per_subject": 1,
        "allow_direct": True,
        "duplicate_window": 2 * 60 * NANOS,
    }


def snapshots_stream(replicas: int = 1) -> dict[str, Any]:
    """Snapshots of the scheduler's fold (`scheduler.snapshot_store`): each snapshot is a
    manifest and its parts, every part on its own subject under
    `fleet.snapshot.<snapshot>.`; a subject holds one message."""
    return {
        "name": SNAPSHOTS_STREAM,
        "subjects": [f"{subjects.SNAPSHOT_PREFIX}.>"],
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "num_replicas": replicas,
        "max_msgs_per_subject": 1,
        "duplicate_window": 2 * 60 * NANOS,
        "allow_direct": True,
        "max_msg_size": MAX_PAYLOAD,
    }


MANAGED_ELSEWHERE: dict[str, tuple[str, ...]] = {
    REPORTS_STREAM: ("sources",),
    EVENTS_STREAM: ("deny_purge",),
}
"""Config fields of the hub streams that one component owns, or that the server fixes at
creation: REPORTS' sources are the leaf clusters' outboxes, kept by provisioning; EVENTS'
`deny_purge` cannot be lifted once set. Ensuring the streams at start keeps what is there."""


def hub_streams(replicas: int = 1, *, retention: bool = False) -> list[dict[str, Any]]:
    """The hub's streams; with `retention` a new EVENTS may be purged by the archiver (which
    creates the archive's stream once it knows EVENTS can be purged)."""
    return [
        events_stream(replicas, purgeable=retention),
        desired_stream(replicas),
        reports_stream(None, replicas),
        snapshots_stream(replicas),
    ]
