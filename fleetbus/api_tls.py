"""TLS for the hub's HTTP API, and how the CLI checks it is talking to the right hub.

The hub serves HTTPS with the operator's certificate (`--tls-cert/--tls-key`) or, with `--tls`,
with the certificate the hub CA issued for its own name (the leafnode listener's, covering
localhost, 127.0.0.1, the host name and `--public-host`). Either way it prints the
certificate's SHA-256 fingerprint and records it in `hub.json`, and then listens for TLS only: a
plain HTTP request on that port gets no answer.

The CLI verifies the hub in one of three ways, strongest first: a pinned fingerprint
(`--tls-fingerprint` / `$FLEETBUS_TLS_FINGERPRINT`, or the one in a local hub's `hub.json`),
a CA file (`--ca-file` / `$FLEETBUS_CA_FILE`, e.g. the hub's `pki/ca.crt`), else the system's
trusted CAs. A pinned fingerprint is compared before a single byte of the request is sent.
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from access.pki import HubPki
from fleetbus.errors import ConflictingOptions

FINGERPRINT_PREFIX = "sha256:"


@dataclass(frozen=True)
class ApiTls:
    """The certificate the API serves, and its fingerprint (`sha256:AB:CD:...`)."""

    cert_file: Path
    key_file: Path
    fingerprint: str
    ca_file: Path | None = None
    """The hub CA's certificate, when the hub CA issued the API's certificate."""


def fingerprint_of_der(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return FINGERPRINT_PREFIX + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def normalized_fingerprint(text: str) -> str:
    """`sha256:ab:cd...`, `AB:CD...` or `abcd...` as `sha256:AB:CD:...`; refuses anything else."""
    hexdigits = text.strip().lower().removeprefix(FINGERPRINT_PREFIX).replace(":", "")
    if len(hexdigits) != 64 or any(ch not in "0123456789abcdef" for ch in hexdigits):
        raise ValueError(
            f"a TLS fingerprint is the certificate's SHA-256 as 64 hex digits, got {text!r}"
        )
    upper = hexdigits.upper()
    return FINGERPRINT_PREFIX + ":".join(upper[i : i + 2] for i in range(0, 64, 2))


def api_tls(
    *,
    cert: Path | None,
    key: Path | None,
    issue: bool,
    pki: HubPki,
    hosts: list[str],
    now: datetime,
) -> ApiTls | None:
    """The TLS the API serves with, checked before anything starts; None for plain HTTP."""
    if (cert is None) != (key is None):
        raise ConflictingOptions("--tls-cert and --tls-key go together: give both or neither")
    if cert is not None and issue:
        raise ConflictingOptions(
            "--tls issues a certificate from the hub CA; --tls-cert brings one"
        )
    if cert is not None and key is not None:
        return _operator_certificate(cert, key)
    if not issue:
        return None
    pki.ensure_server_cert(hosts, now)
    tls = _operator_certificate(pki.server_cert, pki.server_key)
    return ApiTls(tls.cert_file, tls.key_file, tls.fingerprint, ca_file=pki.ca_cert)


def _operator_certificate(cert: Path, key: Path) -> ApiTls:
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not path.is_file():
            raise ConflictingOptions(f"{option}: {path} does not exist or is not a file")
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        pem = cert.read_bytes()
        leaf = x509.load_pem_x509_certificate(pem)
    except (ssl.SSLError, ValueError, OSError) as e:
        raise ConflictingOptions(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its matching key ({e})"
        ) from e
    return ApiTls(cert, key, fingerprint_of_der(leaf.public_bytes(Encoding.DER)))


# --- the CLI's side -------------------------------------------------------------------------------


class CertificateMismatch(ssl.SSLCertVerificationError):
    """The hub presented a certificate other than the pinned one."""


class _PinnedConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, fingerprint: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fingerprint = fingerprint

    def connect(self) -> None:
        super().connect()
        der = self.sock.getpeercert(binary_form=True) or b""
        presented = fingerprint_of_der(der)
        if presented != self._fingerprint:
            self.sock.close()
            raise CertificateMismatch(
                f"the hub's certificate is {presented}, not the pinned {self._fingerprint}"
            )


class _PinnedHandler(urllib.request.HTTPSHandler):
    def __init__(self, fingerprint: str) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the pin replaces chain and name checks
        super().__init__(context=context)
        self._fingerprint = fingerprint
        self._pinned_context = context

    def https_open(self, req: urllib.request.Request) -> Any:
        connection = partial(_PinnedConnection, fingerprint=self._fingerprint)
        return self.do_open(connection, req, context=self._pinned_context)


def client_opener(
    *, fingerprint: str | None, ca_file: Path | None
) -> urllib.request.OpenerDirector:
    """An opener that verifies the hub: by pinned fingerprint, by CA file, else by system CAs."""
    if fingerprint:
        return urllib.request.build_opener(_PinnedHandler(normalized_fingerprint(fingerprint)))
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
