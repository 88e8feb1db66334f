"""How a project's clusters, users of the project's own account, reach the hub in FLEET.

A cluster of a project other than `default` is a NATS user of its project's account: its leaf
connection lands there, and so do the subjects it speaks on. The hub's services (the consumer
gate, the key service, anti-entropy, the REPORTS sourcing) and the streams they serve (DESIRED,
REPORTS) stay in FLEET, one set for the whole hub. The two accounts are joined by exports and
imports of exactly that cluster's subjects, nothing wider:

FLEET exports, the project's account imports (services: a request and its answer):
- `fleet.jsapi.<cluster>.>`, the consumer gate its leaf's mirror asks for its consumer;
- `fleet.keys.<cluster>`, its data keys;
- `$JS.FC.DESIRED.>`, the flow-control answers of its mirror's consumer;
and the stream `fleet.sync.desired.<cluster>.>`: its desired state, delivered to its mirror.

The project's account exports, FLEET imports:
- the service `$JS.edge-<cluster>.API.>`, the JetStream API of its leaf's domain, through which
  REPORTS sources its outbox, and `$JS.FC.REPORTS-<cluster>.>`, the flow-control answers;
- the streams `fleet.sync.reports.<cluster>.>` (its outbox, delivered to REPORTS) and
  `fleet.inventory.<cluster>` (its inventory digests).

So another project's account, which imports none of these, has no route to this cluster's
desired state, keys, reports or consumers at all, whatever a user of it may publish or
subscribe to. The links of every cluster are written into both accounts' JWTs
(`AccountLinks`), pushed when the cluster is registered and dropped when it is removed.

Answers to a service import travel on `_R_.` reply subjects of the importing account: a
project's cluster may publish on `_R_.>` (`project_reply_rights`), a reply space shared by the
clusters of one project only, like `$JSC.R.>` already is.

The default project's clusters are users of FLEET itself and need none of this. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from access.nats_accounts import DEFAULT_PROJECT, FLEET_ACCOUNT, account_of_project
from events import edges, subjects
from events.streams import DESIRED_STREAM
from taskset.projects import project_of

SERVICE_REPLIES = "_R_.>"
"""Where the answers to a service import go, in the importing account."""


@dataclass(frozen=True)
class AccountLinks:
    """The exports and imports one account's JWT carries (claims as nats `jwt/v2` writes
    them), in a stable order so equal links sign equal claims."""

    exports: tuple[tuple[tuple[str, Any], ...], ...] = ()
    imports: tuple[tuple[tuple[str, Any], ...], ...] = ()

    def export_claims(self) -> list[dict[str, Any]]:
        return [dict(entry) for entry in self.exports]

    def import_claims(self) -> list[dict[str, Any]]:
        return [dict(entry) for entry in self.imports]


@dataclass
class _Building:
    exports: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    imports: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def export(self, name: str, subject: str, kind: str) -> None:
        self.exports[(kind, subject)] = {"name": name, "subject": subject, "type": kind}

    def import_(self, name: str, subject: str, kind: str, account: str) -> None:
        self.imports[(kind, subject, account)] = {
            "account": account,
            "name": name,
            "subject": subject,
            "type": kind,
        }

    def links(self) -> AccountLinks:
        return AccountLinks(
            exports=tuple(tuple(sorted(e.items())) for _, e in sorted(self.exports.items())),
            imports=tuple(tuple(sorted(i.items())) for _, i in sorted(self.imports.items())),
        )


def _from_fleet(cluster: str) -> list[tuple[str, str, str]]:
    """(name, subject, kind) FLEET exports to the cluster's project account."""
    return [
        (f"consumer gate {cluster}", f"{edges.consumer_gate_prefix(cluster)}.>", "service"),
        (f"data keys {cluster}", subjects.keys_subject(cluster), "service"),
        ("mirror flow control", f"$JS.FC.{DESIRED_STREAM}.>", "service"),
        (f"desired state {cluster}", f"{edges.desired_deliver_prefix(cluster)}.>", "stream"),
    ]


def _to_fleet(cluster: str) -> list[tuple[str, str, str]]:
    """(name, subject, kind) the cluster's project account exports to FLEET."""
    return [
        (f"edge api {cluster}", f"$JS.{edges.edge_domain(cluster)}.API.>", "service"),
        (
            f"outbox flow control {cluster}",
            f"$JS.FC.{edges.outbox_stream(cluster)}.>",
            "service",
        ),
        (f"reports {cluster}", f"{edges.reports_deliver_prefix(cluster)}.>", "stream"),
        (f"inventory {cluster}", subjects.inventory_subject(cluster), "stream"),
    ]


def account_links(
    clusters: Iterable[str], project_key: Callable[[str], str]
) -> dict[str, AccountLinks]:
    """The links of every account that has any, for the registered `clusters` (full names);
    `project_key` names a project's account key (FLEET's for `default`). Accounts without
    links are absent."""
    building: dict[str, _Building] = {}
    fleet_key = project_key(DEFAULT_PROJECT)
    for cluster in sorted(clusters):
        owner = project_of(cluster)
        account = account_of_project(owner)
        if account == FLEET_ACCOUNT:
            continue
        fleet = building.setdefault(FLEET_ACCOUNT, _Building())
        project = building.setdefault(account, _Building())
        project_key_ = project_key(owner)
        for name, subject, kind in _from_fleet(cluster):
            fleet.export(name, subject, kind)
            project.import_(name, subject, kind, fleet_key)
        for name, subject, kind in _to_fleet(cluster):
            project.export(name, subject, kind)
            fleet.import_(name, subject, kind, project_key_)
    return {account: built.links() for account, built in building.items()}


def project_reply_rights(cluster: str) -> list[str]:
    """What a project's cluster may publish besides the rights every cluster has: the answers
    to the hub's requests that reach it through a service import."""
    if account_of_project(project_of(cluster)) == FLEET_ACCOUNT:
        return []
    return [SERVICE_REPLIES]
