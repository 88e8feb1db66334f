"""The fleetbus certificate authority: the only trust between the hub and its edges.

Edges open no port; their leaf nats-server dials the hub with a client certificate, and the hub
maps that certificate to a NATS user with `verify_and_map`. The mapping convention is fixed
here: a cluster certificate carries exactly one DNS SAN, `<cluster>.<key id>`, where the key id
is the first 16 hex digits of the SHA-256 of the certificate's public key (the subject CN is
the bare cluster name, for people reading it). That SAN is the NATS user name. Because it
changes with every certificate, re-registering a cluster (a new certificate) revokes the old
one by removing its user, and nats-server reloads users without dropping anyone else, which
pinned certificates cannot do (they are not reloadable on the leafnode listener). The hub's
own server certificate is issued by the same CA, so a bundle needs no other trust root.

Keys are ECDSA P-256: small, fast to generate, accepted by every NATS client and server. The CA
lives in the hub's data dir (`pki/`, created by the first `fleetbus up`); private keys are
written 0600 and never leave it, except the one cluster key that goes into its own bundle.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from access.errors import CertificateError
from access.private_files import write_private
from taskset.names import check_name

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=397)
CLUSTER_VALIDITY = timedelta(days=825)
RENEW_BEFORE = timedelta(days=30)
"""A server certificate this close to expiry is re-issued at the next start."""

ORGANIZATION = "fleetbus"


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and its private key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def fingerprint(self) -> str:
        return public_key_fingerprint(self.cert_pem)


def public_key_fingerprint(cert_pem: bytes) -> str:
    """Hex SHA-256 of the certificate's SubjectPublicKeyInfo: the form of nats `pinned_certs`."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


KEY_ID_DIGITS = 16


def cluster_identity(cluster: str, fingerprint: str) -> str:
    """The NATS user a cluster certificate maps to: `<cluster>.<key id>` (its one DNS SAN)."""
    return f"{cluster}.{fingerprint[:KEY_ID_DIGITS]}"


def dns_names_of_certificate(cert_pem: bytes) -> list[str]:
    """The DNS subject alternative names of a PEM certificate."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise CertificateError("not a PEM-encoded X.509 certificate") from e
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.DNSName))


def identity_of_certificate(cert_pem: bytes) -> str:
    """A cluster certificate's single DNS SAN: the user `verify_and_map` maps it to."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound as e:
        raise CertificateError("certificate has no subject alternative name") from e
    names = san.value.get_values_for_type(x509.DNSName)
    if len(names) != 1:
        raise CertificateError(f"a cluster certificate has one DNS name, this one has {names}")
    return names[0]


def cluster_of_certificate(cert_pem: bytes) -> str:
    """The cluster a certificate was issued to (its DNS SAN without the key id)."""
    return identity_of_certificate(cert_pem).split(".", 1)[0]


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


@dataclass(frozen=True)
class CertificateAuthority:
    """The CA's certificate and key, able to issue the hub's and the clusters' certificates."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(cls, now: datetime, name: str = "fleetbus CA") -> CertificateAuthority:
        key = _new_key()
        subject = _name(name, "ca")
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key)

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except ValueError as e:
            raise CertificateError(f"the fleetbus CA is unreadable: {e}") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError("the fleetbus CA key is not an EC key")
        return cls(cert=cert, key=key)

    def _issue(
        self,
        *,
        common_name: str,
        unit: str,
        sans: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        now: datetime,
        validity: timedelta,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> IssuedCertificate:
        key = key or _new_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, unit))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return IssuedCertificate(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key)
        )

    def issue_server(self, hosts: list[str], now: datetime) -> IssuedCertificate:
        """The hub's TLS certificate, valid for every name and address an edge may dial."""
        unique = list(dict.fromkeys(h for h in hosts if h))
        if not unique:
            raise CertificateError("a server certificate needs at least one host name")
        return self._issue(
            common_name=unique[0],
            unit="hub",
            sans=[_san_entry(h) for h in unique],
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            now=now,
            validity=SERVER_VALIDITY,
        )

    def issue_cluster(self, cluster: str, now: datetime) -> IssuedCertificate:
        """A cluster's client certificate; its DNS SAN is the NATS user `verify_and_map` picks."""
        check_name("cluster", cluster)
        key = _new_key()
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        identity = cluster_identity(cluster, hashlib.sha256(spki).hexdigest())
        return self._issue(
            common_name=cluster,
            unit="cluster",
            sans=[x509.DNSName(identity)],
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            now=now,
            validity=CLUSTER_VALIDITY,
            key=key,
        )

    def signed(self, cert_pem: bytes) -> bool:
        """Whether `cert_pem` was issued by this CA."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        if cert.issuer != self.cert.subject:
            return False
        public = self.key.public_key()
        try:
            public.verify(
                cert.signature,
                cert.tbs_certificate_bytes,
                ec.ECDSA(cert.signature_hash_algorithm or hashes.SHA256()),
            )
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class HubPki:
    """The hub's certificate files, under `<data dir>/pki/`.

    ca.crt / ca.key   the fleetbus CA (the key is 0600 and never leaves the hub)
    hub.crt / hub.key the hub's TLS server certificate for the leafnode listener
    """

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "hub.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "hub.key"

    def ensure_ca(self, now: datetime) -> CertificateAuthority:
        """Load the CA, creating it the first time."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if self.ca_cert.exists() and self.ca_key.exists():
            return self.load_ca()
        ca = CertificateAuthority.create(now)
        write_private(self.ca_key, _key_pem(ca.key))
        write_private(self.ca_cert, ca.cert_pem)
        return ca

    def load_ca(self) -> CertificateAuthority:
        try:
            return CertificateAuthority.load(self.ca_cert.read_bytes(), self.ca_key.read_bytes())
        except FileNotFoundError as e:
            raise CertificateError(
                f"no fleetbus CA in {self.root}: start the hub once with `fleetbus up`"
            ) from e

    def ensure_server_cert(self, hosts: list[str], now: datetime) -> None:
        """Issue the hub's server certificate unless a current one already covers `hosts`."""
        ca = self.ensure_ca(now)
        if self.server_cert.exists() and self.server_key.exists():
            existing = self.server_cert.read_bytes()
            if ca.signed(existing) and _covers(existing, hosts, now):
                return
        issued = ca.issue_server(hosts, now)
        write_private(self.server_key, issued.key_pem)
        write_private(self.server_cert, issued.cert_pem)


def _covers(cert_pem: bytes, hosts: list[str], now: datetime) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    if cert.not_valid_after_utc - RENEW_BEFORE < now.astimezone(UTC):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    present = {str(v) for v in san.get_values_for_type(x509.DNSName)}
    present |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    wanted = set()
    for host in hosts:
        try:
            wanted.add(str(ipaddress.ip_address(host)))
        except ValueError:
            wanted.add(host)
    return wanted <= present
