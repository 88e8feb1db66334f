"""What the composition root gives the HTTP API: cluster enrollment and desired-state history.

Enrollment: a certificate from the hub's CA and the edge bundle, packed.

`POST /api/v1/clusters` answers with everything the new cluster needs, as a .tar.gz of the
bundle directory `fleetbus.bundle.write_edge_bundle` writes (the same files as
`fleetbus cluster register --out DIR`). The certificate's private key exists only in that
answer: nothing of it is kept on the hub but the public key's fingerprint, in the
`ClusterRegistered` event. This lives in the composition root because it needs the CA and the
cluster access service; the API sees it only through `api.context.ClusterEnrollment`.

History: "what should cluster C run as of T" is the scheduler's own fold over the log up to T
(`scheduler.history`), started from the newest snapshot taken at or before T
(`scheduler.snapshot_store`), which `api` may not import; it sees them as
`DesiredStateHistory` and `SnapshotControl`.
"""

from __future__ import annotations

import asyncio
import io
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from access.nats_accounts import NatsAuthority
from access.permissions import leaf_credentials
from access.pki import HubPki
from access.service import ClusterAccessService
from api.context import HubContext, IssuedBundle
from events.store import EventStore
from events.streams import REPORTS_STREAM
from fleetbus.bundle import EdgeSettings, write_edge_bundle
from fleetbus.commands.state import state_document
from fleetbus.edgehub import EdgeServices, hub_pki
from fleetbus.renderer import ChartArchiveRenderer
from scheduler.snapshot_store import (
    SNAPSHOT_KEEP,
    SnapshotStore,
    SnapshotTaker,
    desired_state_from_log,
)

APPLY_TIMEOUT_S = 30.0


@dataclass
class BundleEnrollment:
    pki: HubPki
    hub_urls: list[str]
    """Leafnode URLs the cluster dials (all tls:// or all wss://): every node of the hub."""
    authority: NatsAuthority
    access: ClusterAccessService | None = None

    def issue(self, cluster: str, labels: Mapping[str, str], now: datetime) -> IssuedBundle:
        if self.access is not None:
            self.access.check_room(cluster)
        ca = self.pki.load_ca()
        issued = ca.issue_cluster(cluster, now)
        credentials = leaf_credentials(
            self.authority,
            cluster,
            issued.fingerprint,
            expires=issued.certificate.not_valid_after_utc,
        )
        settings = EdgeSettings(cluster=cluster, hub_urls=self.hub_urls, labels=dict(labels))
        with tempfile.TemporaryDirectory(prefix="fleetbus-bundle-") as tmp:
            root = write_edge_bundle(
                Path(tmp) / cluster,
                settings,
                ca_pem=ca.cert_pem,
                issued=issued,
                credentials=credentials,
            )
            return IssuedBundle(fingerprint=issued.fingerprint, archive=pack(root, cluster))

    async def wait_applied(self, seq: int) -> None:
        if self.access is None:
            return
        async with asyncio.timeout(APPLY_TIMEOUT_S):
            await self.access.wait_applied(seq)


def pack(directory: Path, arcname: str) -> bytes:
    """`directory` as a .tar.gz whose single top-level directory is `arcname`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=arcname)
    return buffer.getvalue()


def connect_api_to_edges(context: HubContext, edges: EdgeServices) -> None:
    """Give the API what the edge side knows: how to enroll clusters, when a project's NATS
    account is effective, and who is connected."""
    context.enrollment = BundleEnrollment(
        pki=hub_pki(edges.data),
        hub_urls=list(edges.leaf_urls),
        authority=edges.authority,
        access=edges.access,
    )
    context.project_accounts = edges.projects
    antientropy = edges.antientropy
    context.last_seen = lambda: antientropy.last_seen
    context.edge_status = lambda: antientropy.edge_status


class LogStateHistory:
    """`fleetbus state` and `fleetbus snapshot` for the API: the log replayed through the
    scheduler's fold, from the newest snapshot that fits."""

    def __init__(
        self,
        store: EventStore,
        renderer: ChartArchiveRenderer | None = None,
        *,
        snapshot_keep: int = SNAPSHOT_KEEP,
    ) -> None:
        self.store = store
        self.renderer = renderer
        self.snapshot_keep = snapshot_keep
        self.snapshots = SnapshotStore(store)
        self._taking = asyncio.Lock()

    async def state_at(self, cluster: str, at: datetime | None) -> dict[str, Any]:
        state = await desired_state_from_log(
            self.store, cluster, at, self.renderer, snapshots=self.snapshots
        )
        return state_document(state, at)

    async def listing(self) -> list[dict[str, Any]]:
        return [info.to_json() for info in await self.snapshots.listing()]

    async def take(self) -> dict[str, Any] | None:
        # A taker of its own each time: it starts from the newest snapshot, and the fold is
        # not kept in this process's memory between requests.
        async with self._taking:
            reports = self.store.on_stream(REPORTS_STREAM)
            taker = SnapshotTaker(self.store, reports, self.renderer, keep=self.snapshot_keep)
            info = await taker.take(datetime.now(UTC))
        return info.to_json() if info is not None else None
