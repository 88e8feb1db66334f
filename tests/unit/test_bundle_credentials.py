"""An edge bundle carries its NATS credentials; a bundle from before them is refused clearly."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from access.nats_jwt import credentials_file
from access.pki import CertificateAuthority
from edge_connector.errors import BundleError
from fleetbus.bundle import CREDS_FILE, EdgeSettings, read_edge_bundle, write_edge_bundle

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def write_bundle(root: Path) -> Path:
    ca = CertificateAuthority.create(NOW)
    return write_edge_bundle(
        root,
        EdgeSettings(cluster="alpha", hub_urls=["tls://n1:443", "tls://n2:443"]),
        ca_pem=ca.cert_pem,
        issued=ca.issue_cluster("alpha", NOW),
        credentials=credentials_file("JWT", "SEED"),
    )


def test_the_leaf_config_shows_the_credentials_and_lists_every_hub_node(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "alpha")
    bundle = read_edge_bundle(root)
    assert bundle.creds_file.stat().st_mode & 0o077 == 0
    leaf = (root / "leaf.conf").read_text()
    assert f'credentials: "./{CREDS_FILE}"' in leaf
    assert '["tls://n1:443","tls://n2:443"]' in leaf


def test_a_bundle_from_before_nats_credentials_says_how_to_get_a_new_one(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "alpha")
    (root / CREDS_FILE).unlink()
    with pytest.raises(BundleError, match="fleetbus cluster register NAME --out DIR"):
        read_edge_bundle(root)


def test_a_project_clusters_bundle_refuses_the_durable_desired_source(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(NOW)

    def bundle(cluster: str, source: str) -> Path:
        return write_edge_bundle(
            tmp_path / f"{cluster}-{source}",
            EdgeSettings(cluster=cluster, hub_urls=["tls://n1:443"], desired_source=source),
            ca_pem=ca.cert_pem,
            issued=ca.issue_cluster(cluster, NOW),
            credentials=credentials_file("JWT", "SEED"),
        )

    assert read_edge_bundle(bundle("alpha", "durable")).settings.desired_source == "durable"
    assert read_edge_bundle(bundle("team-a--east", "mirror")).cluster == "team-a--east"
    with pytest.raises(BundleError, match=r"edge\.json: desired_source 'durable'.*team-a"):
        read_edge_bundle(bundle("team-a--east", "durable"))
