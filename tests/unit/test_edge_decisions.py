"""The connector's pure decisions, the hub's anti-entropy and provisioning plans, access rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from access.errors import AccessError
from access.nats_accounts import FLEET_ACCOUNT, NatsAuthority, credentials_jwt
from access.nats_jwt import decode
from access.permissions import (
    REVOCATION_KEPT,
    ClusterAccess,
    client_permissions,
    current_revocations,
    evolve_access,
    evolve_revocations,
    leaf_credentials,
    leaf_permissions,
    revoked_clusters,
    user_key_of,
)
from access.pki import CLUSTER_VALIDITY
from edge_connector import decisions
from edge_connector.errors import ApplyFailed
from edge_connector.executor import AppliedTask, ApplyResult, DriftObserved, ExecutorInventory
from events import edges
from events.catalog import ClusterDeregistered, ClusterLabelsChanged, ClusterRegistered
from events.inventory import (
    InventoryDigest,
    TasksetState,
    decode_inventory,
    desired_state_digest,
    encode_inventory,
)
from scheduler.antientropy import DesiredEntry, confirmed, cooling_down, decide_repair, hub_digest
from scheduler.provisioning import (
    durable_config,
    evolve_clusters,
    report_source,
    reports_config,
    stalled_sources,
)
from taskset.model import ClusterTask, Step, Taskset

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def task(
    *, generation: int = 1, digest: str = "sha256:a", removed: bool = False, **taskset: object
) -> ClusterTask:
    body = Taskset(
        name="web",
        install=[Step(object={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})],
        **taskset,  # type: ignore[arg-type]
    )
    return ClusterTask(
        cluster="alpha",
        taskset_name="web",
        version=generation,
        generation=generation,
        digest=digest,
        taskset=body,
        removed=removed,
    )


@pytest.mark.parametrize(
    ("desired", "applied", "action"),
    [
        (task(), None, "apply"),
        (task(), AppliedTask(generation=1, digest="sha256:a"), "none"),
        (task(generation=2), AppliedTask(generation=1, digest="sha256:a"), "apply"),
        (task(digest="sha256:b"), AppliedTask(generation=1, digest="sha256:a"), "apply"),
        (task(removed=True), AppliedTask(generation=1, digest="sha256:a"), "remove"),
        (task(removed=True), None, "none"),
    ],
)
def test_plan_applies_what_differs_and_removes_what_is_tombstoned(
    desired: ClusterTask, applied: AppliedTask | None, action: str
) -> None:
    assert decisions.plan_task(desired, applied) == action


def test_retry_delay_doubles_up_to_a_minute() -> None:
    assert [decisions.retry_delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert decisions.retry_delay(30) == decisions.MAX_RETRY_DELAY


def test_report_ids_are_deterministic_uuid7s_of_their_key_and_time() -> None:
    first = decisions.report_id("applied|alpha|web|1", NOW)
    assert first == decisions.report_id("applied|alpha|web|1", NOW)
    assert first != decisions.report_id("applied|alpha|web|2", NOW)
    assert first[14] == "7"
    later = decisions.report_id("applied|alpha|web|1", NOW + timedelta(seconds=1))
    assert later > first


def test_applied_and_failed_events_describe_the_task_and_name_the_cluster_as_actor() -> None:
    applied = decisions.applied_event(task(), ApplyResult(objects=3, duration_s=0.5), NOW)
    assert (applied.cluster, applied.taskset, applied.generation, applied.objects) == (
        "alpha",
        "web",
        1,
        3,
    )
    assert applied.actor == "cluster:alpha"
    assert applied.subject == "fleet.report.alpha.web"
    failure = ApplyFailed(phase="install", object="ConfigMap/c", reason="boom")
    failed = decisions.failed_event(task(), failure, NOW)
    assert (failed.phase, failed.object, failed.reason) == ("install", "ConfigMap/c", "boom")
    assert failed.id != applied.id


def observed(fields: list[str], deleted: bool = False) -> DriftObserved:
    return DriftObserved(
        taskset="web",
        object="ConfigMap/c",
        fields=fields,
        deleted=deleted,
        observation="ConfigMap/c@7",
        observed_at=NOW,
    )


def test_drift_is_reported_and_corrected_under_the_correct_policy() -> None:
    decision = decisions.decide_drift_report(task(), observed(["/data/x"]))
    assert decision.correct
    assert [e.type_name for e in decision.events] == ["DriftDetected"]
    again = decisions.decide_drift_report(task(), observed(["/data/x"]))
    assert again.events[0].id == decision.events[0].id


def test_drift_under_report_policy_is_reported_but_not_corrected() -> None:
    decision = decisions.decide_drift_report(task(drift_policy="report"), observed(["/data/x"]))
    assert not decision.correct
    assert len(decision.events) == 1


def test_drift_under_ignore_policy_or_only_on_ignored_paths_is_left_alone() -> None:
    assert (
        decisions.decide_drift_report(task(drift_policy="ignore"), observed(["/data/x"])).events
        == []
    )
    ignoring = task(ignore_paths=["/spec/replicas"])
    decision = decisions.decide_drift_report(ignoring, observed(["/spec/replicas"]))
    assert decision.events == []
    assert not decision.correct
    deleted = decisions.decide_drift_report(ignoring, observed([], deleted=True))
    assert deleted.correct


def test_drift_of_a_taskset_the_edge_does_not_hold_is_ignored() -> None:
    assert decisions.decide_drift_report(None, observed(["/x"])).events == []
    assert decisions.decide_drift_report(task(removed=True), observed(["/x"])).events == []


def test_inventory_digest_round_trips_and_its_desired_digest_is_shared_with_the_hub() -> None:
    held = {"web": task(), "db": task(removed=True)}
    inventory = ExecutorInventory(
        applied={"web": AppliedTask(generation=1, digest="sha256:a")},
        live_digest="sha256:live",
        objects=1,
    )
    digest = decisions.inventory_digest("alpha", held, inventory, NOW)
    assert decode_inventory(encode_inventory(digest)) == digest
    assert digest.desired["db"].removed
    assert digest.desired_digest == desired_state_digest(
        {
            "web": TasksetState(generation=1, digest="sha256:a"),
            "db": TasksetState(generation=1, digest="sha256:a", removed=True),
        }
    )


def entry(name: str, generation: int, *, age: float = 60.0, removed: bool = False) -> DesiredEntry:
    return DesiredEntry(
        subject=f"fleet.desired.alpha.{name}",
        seq=generation,
        stored_at=NOW - timedelta(seconds=age),
        state=TasksetState(generation=generation, digest=f"sha256:{generation}", removed=removed),
        payload=b"",
    )


def inventory_of(**desired: TasksetState) -> InventoryDigest:
    return InventoryDigest(
        cluster="alpha",
        sent_at=NOW,
        desired=desired,
        desired_digest=desired_state_digest(desired),
    )


def test_repair_names_what_the_edge_lacks_or_holds_stale_once_settled() -> None:
    entries = {
        "web": entry("web", 2),
        "db": entry("db", 1),
        "new": entry("new", 1, age=1.0),
        "gone": entry("gone", 3, removed=True),
    }
    edge = inventory_of(web=TasksetState(generation=1, digest="sha256:1"))
    assert decide_repair(entries, edge, NOW, settle=timedelta(seconds=10)) == ["db", "web"]


def test_a_cluster_in_sync_has_the_hub_digest_it_reports() -> None:
    entries = {"web": entry("web", 2)}
    edge = inventory_of(web=entries["web"].state)
    assert hub_digest(entries) == edge.desired_digest
    assert decide_repair(entries, edge, NOW, settle=timedelta(0)) == []


def test_repairs_of_one_cluster_cool_down() -> None:
    assert cooling_down(NOW - timedelta(seconds=5), NOW, timedelta(seconds=30))
    assert not cooling_down(NOW - timedelta(seconds=31), NOW, timedelta(seconds=30))
    assert not cooling_down(None, NOW, timedelta(seconds=30))


def registered(cluster: str, **labels: str) -> ClusterRegistered:
    return ClusterRegistered(
        id=f"id-{cluster}",
        occurred_at=NOW,
        actor="test",
        cluster=cluster,
        labels=labels,
        certificate_fingerprint="ab" * 32,
    )


def test_provisioning_folds_registrations_and_plans_consumers_and_sources() -> None:
    clusters = evolve_clusters({}, registered("alpha"))
    clusters = evolve_clusters(clusters, registered("sim-30", **{edges.CONNECTION_LABEL: "client"}))
    assert clusters == {"alpha": edges.LEAF, "sim-30": edges.CLIENT}
    config = durable_config("alpha")
    assert config["filter_subject"] == "fleet.desired.alpha.>"
    assert config["deliver_policy"] == "last_per_subject"
    assert config["ack_policy"] == "explicit"
    assert report_source("alpha")["external"]["api"] == "$JS.edge-alpha.API"
    reports = reports_config(clusters)
    # A client cluster publishes into REPORTS itself: only the leaf cluster is sourced.
    assert [s["filter_subject"] for s in reports["sources"]] == ["fleet.report.alpha.>"]
    assert reports["subjects"] == ["fleet.report.>"]
    assert reports["duplicate_window"] > 0
    gone = evolve_clusters(
        clusters, ClusterDeregistered(id="x", occurred_at=NOW, actor="t", cluster="alpha")
    )
    assert gone == {"sim-30": edges.CLIENT}


def test_stalled_sources_are_those_never_or_long_not_heard_from() -> None:
    info = {
        "sources": [
            {"name": "REPORTS-a", "active": -1},
            {"name": "REPORTS-b", "active": 500_000_000},
            {"name": "REPORTS-c", "active": 9_000_000_000},
        ]
    }
    assert stalled_sources(info, stale_ns=3_000_000_000) == ["a", "c"]


def test_access_follows_registrations_relabels_and_deregistrations() -> None:
    access = evolve_access({}, registered("alpha"))
    assert access["alpha"].fingerprint == "ab" * 32
    relabelled = evolve_access(
        access,
        ClusterLabelsChanged(
            id="y",
            occurred_at=NOW,
            actor="t",
            cluster="alpha",
            labels={edges.CONNECTION_LABEL: "client"},
        ),
    )
    assert relabelled["alpha"].connection == edges.CLIENT
    assert revoked_clusters(access, relabelled) == {"alpha"}
    assert (
        evolve_access(
            access, ClusterDeregistered(id="z", occurred_at=NOW, actor="t", cluster="alpha")
        )
        == {}
    )


def test_a_cluster_user_has_rights_on_its_own_subjects_only() -> None:
    for permissions in (leaf_permissions("alpha"), client_permissions("alpha")):
        rights = permissions["publish"]["allow"] + permissions["subscribe"]["allow"]
        assert not [r for r in rights if "beta" in r]
        assert all("alpha" in r or r.startswith(("$JSC.R.", "$JS.FC.DESIRED.")) for r in rights), (
            rights
        )
        assert not [r for r in rights if r in (">", "fleet.>", "$JS.hub.API.>", "$JS.API.>")]


def test_a_leaf_cluster_user_jwt_carries_its_rights_and_the_key_of_its_certificate(
    tmp_path: Path,
) -> None:
    authority = NatsAuthority.open(tmp_path)
    creds = leaf_credentials(authority, "alpha", "sha256:" + "ab" * 32, expires=NOW)
    claims = decode(credentials_jwt(creds))
    assert claims["exp"] == int(NOW.timestamp()), "expires with its certificate"
    assert claims["iss"] == authority.public_key(FLEET_ACCOUNT)
    assert claims["name"] == f"alpha.{'ab' * 8}"
    assert claims["sub"] == user_key_of(
        authority, ClusterAccess(name="alpha", fingerprint="ab" * 32)
    )
    assert claims["nats"]["allowed_connection_types"] == ["LEAFNODE", "LEAFNODE_WS"]
    assert claims["nats"]["pub"] == leaf_permissions("alpha")["publish"]
    assert claims["nats"]["sub"] == leaf_permissions("alpha")["subscribe"]
    # Another certificate of the same cluster is another user; no certificate, no user.
    assert (
        user_key_of(authority, ClusterAccess(name="alpha", fingerprint="cd" * 32)) != claims["sub"]
    )
    assert user_key_of(authority, ClusterAccess(name="nocert")) is None
    with pytest.raises(AccessError, match="reserved"):
        leaf_credentials(authority, "hub", "ab" * 32, expires=NOW)


def test_a_revocation_is_forgotten_once_every_jwt_of_its_key_has_expired() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    recent = int((now - timedelta(days=30)).timestamp())
    expired = int((now - REVOCATION_KEPT - timedelta(seconds=1)).timestamp())
    assert current_revocations({"UNEW": recent, "UOLD": expired}, now) == {"UNEW": recent}
    assert REVOCATION_KEPT > CLUSTER_VALIDITY


def test_a_key_no_longer_admitted_is_revoked_and_a_client_admitted_again_is_not() -> None:
    def key_of(access: ClusterAccess) -> str | None:
        return f"U-{access.name}-{access.fingerprint}" if access.fingerprint else None

    alpha = ClusterAccess(name="alpha", fingerprint="1")
    renewed = ClusterAccess(name="alpha", fingerprint="2")
    beta = ClusterAccess(name="beta", fingerprint="3")
    revoked = evolve_revocations(
        {}, {"alpha": alpha, "beta": beta}, {"alpha": renewed, "beta": beta}, at=10, key_of=key_of
    )
    assert revoked == {"U-alpha-1": 10}
    revoked = evolve_revocations(
        revoked, {"alpha": renewed, "beta": beta}, {"alpha": renewed}, at=20, key_of=key_of
    )
    assert revoked == {"U-alpha-1": 10, "U-beta-3": 20}
    # beta's key admitted again (a client cluster's key is its name's): no longer revoked.
    assert evolve_revocations(
        revoked, {"alpha": renewed}, {"alpha": renewed, "beta": beta}, at=30, key_of=key_of
    ) == {"U-alpha-1": 10}


def test_a_repair_needs_two_consecutive_digests_lacking_the_same_message() -> None:
    assert confirmed(None, {"web": 4}) == []
    assert confirmed({"web": 4, "db": 2}, {"web": 4, "db": 3, "new": 1}) == ["web"]
    assert confirmed({"web": 4}, {}) == []
