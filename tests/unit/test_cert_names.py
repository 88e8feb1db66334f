"""The edge reads its bundle certificate's names with the standard library, as the hub's
`cryptography` reading does; a bad certificate file is a clear bundle error."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path

import pytest

from access.cert_names import (
    cluster_of_certificate_file,
    dns_names_of_certificate_file,
    identity_of_certificate_file,
)
from access.errors import CertificateError
from access.nats_jwt import credentials_file
from access.pki import CertificateAuthority, identity_of_certificate
from edge_connector.errors import BundleError
from fleetbus.bundle import CERT_FILE, EdgeSettings, read_edge_bundle, write_edge_bundle

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CA = CertificateAuthority.create(NOW)


def write(tmp_path: Path, pem: bytes, name: str = "cert.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(pem)
    return path


def test_a_cluster_certificate_reads_as_the_hub_reads_it(tmp_path: Path) -> None:
    issued = CA.issue_cluster("alpha", NOW)
    path = write(tmp_path, issued.cert_pem)
    assert identity_of_certificate_file(path) == identity_of_certificate(issued.cert_pem)
    assert identity_of_certificate_file(path).startswith("alpha.")
    assert cluster_of_certificate_file(path) == "alpha"


def test_a_certificate_with_several_names_is_not_a_cluster_certificate(tmp_path: Path) -> None:
    server = CA.issue_server(["hub.example.com", "localhost"], NOW)
    path = write(tmp_path, server.cert_pem)
    assert set(dns_names_of_certificate_file(path)) == {"hub.example.com", "localhost"}
    with pytest.raises(CertificateError, match="one DNS name"):
        identity_of_certificate_file(path)


def test_a_certificate_with_an_address_only_has_no_dns_name(tmp_path: Path) -> None:
    server = CA.issue_server(["127.0.0.1"], NOW)
    with pytest.raises(CertificateError, match="no DNS subject alternative name"):
        identity_of_certificate_file(write(tmp_path, server.cert_pem))


@pytest.mark.parametrize(
    "content", [b"", b"not a certificate\n", CA.issue_cluster("a", NOW).key_pem]
)
def test_what_is_not_a_pem_certificate_is_named_so(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(CertificateError, match=r"not a PEM-encoded X\.509 certificate"):
        identity_of_certificate_file(write(tmp_path, content))


def test_a_missing_certificate_file_is_named_so(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="cannot read it"):
        identity_of_certificate_file(tmp_path / "absent.pem")


def test_a_bundle_whose_certificate_is_damaged_is_refused_naming_the_file(tmp_path: Path) -> None:
    root = write_edge_bundle(
        tmp_path / "bundle",
        EdgeSettings(cluster="alpha", hub_urls=["tls://hub.example:443"]),
        ca_pem=CA.cert_pem,
        issued=CA.issue_cluster("alpha", NOW),
        credentials=credentials_file("JWT", "SEED"),
    )
    assert read_edge_bundle(root).cluster == "alpha"
    (root / CERT_FILE).write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n")
    with pytest.raises(BundleError, match=rf"{CERT_FILE}: not a PEM-encoded X\.509 certificate"):
        read_edge_bundle(root)


def test_a_bundle_holding_another_clusters_certificate_is_refused(tmp_path: Path) -> None:
    root = write_edge_bundle(
        tmp_path / "bundle",
        EdgeSettings(cluster="alpha", hub_urls=["tls://hub.example:443"]),
        ca_pem=CA.cert_pem,
        issued=CA.issue_cluster("beta", NOW),
        credentials=credentials_file("JWT", "SEED"),
    )
    with pytest.raises(BundleError, match="issued to cluster 'beta'"):
        read_edge_bundle(root)


@pytest.mark.parametrize("decoder", ["standard library", "cryptography"])
def test_either_reader_gives_the_same_names_and_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decoder: str
) -> None:
    if decoder == "cryptography":
        monkeypatch.delattr(ssl._ssl, "_test_decode_cert")  # type: ignore[attr-defined]
    issued = CA.issue_cluster("alpha", NOW)
    assert cluster_of_certificate_file(write(tmp_path, issued.cert_pem)) == "alpha"
    server = CA.issue_server(["hub.example.com", "localhost"], NOW)
    assert set(dns_names_of_certificate_file(write(tmp_path, server.cert_pem, "s.pem"))) == {
        "hub.example.com",
        "localhost",
    }
    with pytest.raises(CertificateError, match=r"not a PEM-encoded X\.509 certificate"):
        identity_of_certificate_file(write(tmp_path, b"garbage", "bad.pem"))
