"""Which consumers a cluster may create on the hub's DESIRED stream: its mirror's, nothing else.

An edge's leaf nats-server mirrors the cluster's slice of DESIRED into its own domain. To do so
it creates a consumer on the hub, named by the server (`JS_MIRROR_<random>`), so a permission on
the JetStream create subject cannot fix the name: with `CONSUMER.CREATE.DESIRED.*.<own filter>`
a cluster's credentials could create durable push consumers delivering anywhere, that outlived
the cluster. So the mirror does not speak to the hub's JetStream API at all: its external API
prefix is the cluster's gate subject (`fleet.jsapi.<cluster>`, the only API subject its
certificate may publish on), and the hub's consumer gate forwards a request only when it is
exactly what a mirror of this cluster's own stream sends:

- a create (never an update) of a consumer named `JS_MIRROR_<letters and digits>`, with no
  durable name, filtered on the cluster's own subjects (subject and body agree);
- push delivery into the cluster's own delivery prefix, no acks, flow control and heartbeats on,
  as a direct (sourcing) consumer whose metadata names the cluster's mirror stream and domain;
- an inactivity threshold of at most `MAX_INACTIVE_S`, so the consumer disappears by itself
  once its edge is gone (the gate also deletes it at once when the cluster is removed);
- no more than `LIVE_CONSUMER_LIMIT` live consumers per cluster.

Deletes are forwarded only for consumers the gate created for the same cluster. Everything
else is refused with a JetStream-shaped error that says which rule failed.

Pure: `decide_request` looks at the subject, the body and what the gate knows is live.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

from events import edges, subjects
from events.streams import DESIRED_STREAM

GATE_PREFIX = edges.GATE_PREFIX
MIRROR_NAME = re.compile(r"JS_MIRROR_[A-Za-z0-9]{1,32}")
"""How a mirror names the consumer it asks for (the server may add `-<suffix>` on creation)."""
MAX_INACTIVE_S = 60
LIVE_CONSUMER_LIMIT = 2
"""A mirror has one consumer; a second may exist briefly while it replaces a stalled one."""
NANOS = 1_000_000_000
REFUSED_CODE = 403
REFUSED_ERR_CODE = 10100
"""fleetbus's own err_code in the JetStream error shape (nats-server's codes stop below it)."""


@dataclass(frozen=True)
class Forward:
    """Send the request on to the hub's JetStream API under this subject."""

    api_subject: str
    consumer: str
    creates: bool


@dataclass(frozen=True)
class Refuse:
    """Answer the edge with this reason; nothing reaches JetStream."""

    reason: str


def decide_request(
    cluster: str,
    api: str,
    body: Mapping[str, Any] | None,
    *,
    live: Set[str],
    registered: bool,
) -> Forward | Refuse:
    """What to do with `api` (the subject after `fleet.jsapi.<cluster>.`) from `cluster`."""
    if not registered:
        return Refuse(f"cluster {cluster!r} is not registered")
    tokens = api.split(".")
    if tokens[:2] == ["CONSUMER", "DELETE"] and len(tokens) == 4:
        stream, name = tokens[2], tokens[3]
        if stream != DESIRED_STREAM or name not in live:
            return Refuse(
                f"only consumers this cluster's mirror created may be deleted, not {name!r}"
            )
        return Forward(f"$JS.API.{api}", name, creates=False)
    if tokens[:2] != ["CONSUMER", "CREATE"]:
        return Refuse(f"{'.'.join(tokens[:2])!r} is not an operation an edge may ask for")
    own_filter = subjects.desired_filter(cluster)
    if len(tokens) < 4 or tokens[2] != DESIRED_STREAM:
        return Refuse(f"consumers may only be created on {DESIRED_STREAM}")
    name, subject_filter = tokens[3], ".".join(tokens[4:])
    if subject_filter != own_filter:
        return Refuse(f"the filter must be {own_filter!r}, not {subject_filter!r}")
    if not MIRROR_NAME.fullmatch(name):
        return Refuse(f"consumer name {name!r} is not a mirror's (JS_MIRROR_...)")
    problem = _mirror_shape_problem(cluster, name, body)
    if problem is not None:
        return Refuse(problem)
    if name not in live and len(live) >= LIVE_CONSUMER_LIMIT:
        return Refuse(
            f"cluster {cluster!r} already has {len(live)} live consumers "
            f"(limit {LIVE_CONSUMER_LIMIT})"
        )
    return Forward(f"$JS.API.{api}", name, creates=True)


def _mirror_shape_problem(cluster: str, name: str, body: Mapping[str, Any] | None) -> str | None:
    if body is None:
        return "the request body is not a JSON object"
    config = body.get("config")
    if not isinstance(config, Mapping):
        return "the request has no consumer config"
    if body.get("action", "") not in ("", "create"):
        return f"action {body.get('action')!r} is refused: consumers are created, never updated"
    if body.get("stream_name", DESIRED_STREAM) != DESIRED_STREAM:
        return f"stream_name must be {DESIRED_STREAM!r}"
    if config.get("durable_name"):
        return "durable consumers are refused (the hub provisions the cluster's only durable)"
    if config.get("name") != name:
        return "the config's name differs from the subject's"
    own_filter = subjects.desired_filter(cluster)
    filters = config.get("filter_subjects") or []
    if config.get("filter_subject") != own_filter or filters not in ([], [own_filter]):
        return f"the config's filter must be {own_filter!r}"
    deliver = config.get("deliver_subject")
    prefix = f"{edges.desired_deliver_prefix(cluster)}."
    if not isinstance(deliver, str) or not deliver.startswith(prefix) or "*" in deliver:
        return f"push delivery must go to the cluster's own prefix {prefix}<id>, not {deliver!r}"
    if config.get("deliver_group"):
        return "deliver groups are refused"
    if config.get("ack_policy") != "none":
        return "a mirror's consumer does not ack (ack_policy none)"
    if config.get("direct") is not True or not config.get("flow_control"):
        return "only the direct, flow-controlled consumer of a mirror is allowed"
    inactive = config.get("inactive_threshold")
    if not isinstance(inactive, int) or not 0 < inactive <= MAX_INACTIVE_S * NANOS:
        return f"inactive_threshold must be set and at most {MAX_INACTIVE_S} s"
    metadata = config.get("metadata") or {}
    if not isinstance(metadata, Mapping) or (
        metadata.get("_nats.mirror.stream") != edges.mirror_stream(cluster)
        or metadata.get("_nats.mirror.domain") != edges.edge_domain(cluster)
    ):
        return f"the consumer must belong to the mirror {edges.mirror_stream(cluster)!r}"
    return None


def refusal_reply(reason: str) -> dict[str, Any]:
    """The JetStream API error an edge gets back for a refused request."""
    return {
        "type": "io.nats.jetstream.api.v1.consumer_create_response",
        "error": {
            "code": REFUSED_CODE,
            "err_code": REFUSED_ERR_CODE,
            "description": f"refused by the hub's consumer gate: {reason}",
        },
    }
