"""The fleetbus CA, its certificates, and how a report's origin is read."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from access.errors import CertificateError
from access.pki import (
    CertificateAuthority,
    HubPki,
    cluster_identity,
    cluster_of_certificate,
    identity_of_certificate,
)
from events.edges import report_origin
from taskset.errors import InvalidName

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def sans(cert_pem: bytes) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in names.get_values_for_type(x509.DNSName)} | {
        str(v) for v in names.get_values_for_type(x509.IPAddress)
    }


def test_a_cluster_certificate_names_its_cluster_and_key_in_one_dns_san() -> None:
    ca = CertificateAuthority.create(NOW)
    issued = ca.issue_cluster("alpha", NOW)
    identity = identity_of_certificate(issued.cert_pem)
    assert identity == cluster_identity("alpha", issued.fingerprint)
    assert sans(issued.cert_pem) == {identity}
    assert cluster_of_certificate(issued.cert_pem) == "alpha"
    assert ca.signed(issued.cert_pem)
    again = ca.issue_cluster("alpha", NOW)
    assert identity_of_certificate(again.cert_pem) != identity


def test_a_certificate_from_another_ca_is_not_signed_by_ours() -> None:
    ours, theirs = CertificateAuthority.create(NOW), CertificateAuthority.create(NOW)
    assert not ours.signed(theirs.issue_cluster("alpha", NOW).cert_pem)


def test_cluster_names_are_checked_before_anything_is_issued() -> None:
    with pytest.raises(InvalidName):
        CertificateAuthority.create(NOW).issue_cluster("Not.A.Name", NOW)


def test_a_server_certificate_covers_every_host_and_address() -> None:
    issued = CertificateAuthority.create(NOW).issue_server(
        ["hub.example.com", "localhost", "127.0.0.1"], NOW
    )
    assert sans(issued.cert_pem) == {"hub.example.com", "localhost", "127.0.0.1"}
    with pytest.raises(CertificateError):
        identity_of_certificate(issued.cert_pem)


def test_the_hub_pki_is_created_once_private_and_reissued_for_new_hosts(tmp_path: Path) -> None:
    pki = HubPki(tmp_path / "pki")
    pki.ensure_server_cert(["localhost"], NOW)
    ca_before = pki.ca_cert.read_bytes()
    server_before = pki.server_cert.read_bytes()
    assert stat.S_IMODE(pki.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pki.root.stat().st_mode) == 0o700
    pki.ensure_server_cert(["localhost"], NOW)
    assert pki.server_cert.read_bytes() == server_before
    pki.ensure_server_cert(["localhost", "hub.example.com"], NOW)
    assert pki.server_cert.read_bytes() != server_before
    assert pki.ca_cert.read_bytes() == ca_before
    renewed = pki.server_cert.read_bytes()
    pki.ensure_server_cert(["localhost", "hub.example.com"], NOW + timedelta(days=380))
    assert pki.server_cert.read_bytes() != renewed


def test_loading_a_missing_ca_says_to_start_the_hub(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="fleetbus up"):
        HubPki(tmp_path / "pki").load_ca()


@pytest.mark.parametrize(
    ("headers", "origin"),
    [
        ({"Nats-Stream-Source": "REPORTS-alpha:3d1YnujO 1 fleet.report.alpha.> > x y"}, "alpha"),
        ({"Nats-Stream-Source": "REPORTS-sim-21 4 fleet.report.sim-21.> > x y"}, "sim-21"),
        ({"Nats-Stream-Source": "EVENTS:abc 1 > > x"}, None),
        ({"Nats-Msg-Id": "x"}, None),
        (None, None),
    ],
)
def test_a_reports_origin_is_the_outbox_named_in_the_source_header(
    headers: dict[str, str] | None, origin: str | None
) -> None:
    assert report_origin("", headers) == origin


@pytest.mark.parametrize(
    ("subject", "headers", "origin"),
    [
        ("fleet.report.sim-7.web", None, "sim-7"),
        ("fleet.report.sim-7.web", {"Nats-Msg-Id": "x"}, "sim-7"),
        # A sourced copy: the header decides, whatever the subject says.
        ("fleet.report.sim-7.web", {"Nats-Stream-Source": "REPORTS-alpha 1 > > x"}, "alpha"),
        ("fleet.report.sim-7.web", {"Nats-Stream-Source": "EVENTS:abc 1 > > x"}, None),
        ("fleet.evt.cluster.sim-7", None, None),
        ("fleet.report.", None, None),
        ("", None, None),
    ],
)
def test_a_report_published_straight_into_the_hub_comes_from_the_cluster_its_subject_names(
    subject: str, headers: dict[str, str] | None, origin: str | None
) -> None:
    assert report_origin(subject, headers) == origin
