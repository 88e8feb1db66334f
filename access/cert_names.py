"""The names a certificate file was issued to, read with the interpreter's own OpenSSL binding.

An edge checks at start that its bundle's certificate names its cluster. Parsing it with
`cryptography` (as `access.pki` does on the hub) would load that library's whole Rust extension
into the edge for this one check, about 11 MiB of resident memory that stays for the life of
the process; the standard library's `_ssl` module, which the edge loads anyway for its TLS
connections, decodes a PEM certificate file into its subject and subject alternative names.

`access.pki.identity_of_certificate` is the hub's reading of the same names; both apply the
same rule: a cluster certificate has exactly one DNS name, `<cluster>.<key id>`.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from access.errors import CertificateError


def dns_names_of_certificate_file(path: Path) -> list[str]:
    """The DNS subject alternative names of the PEM certificate in `path`."""
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise CertificateError(f"cannot read it: {e.strerror or e}") from e
    decode = getattr(ssl._ssl, "_test_decode_cert", None)  # type: ignore[attr-defined]
    if decode is None:
        # An interpreter whose ssl module lacks the decoder: read it as the hub does.
        from access.pki import dns_names_of_certificate

        return dns_names_of_certificate(pem)
    try:
        decoded = decode(str(path))
    except (ssl.SSLError, OSError) as e:
        raise CertificateError("not a PEM-encoded X.509 certificate") from e
    names = decoded.get("subjectAltName", ())
    return [str(value) for kind, value in names if kind == "DNS"]


def identity_of_certificate_file(path: Path) -> str:
    """A cluster certificate's single DNS SAN: the user `verify_and_map` maps it to."""
    names = dns_names_of_certificate_file(path)
    if not names:
        raise CertificateError("certificate has no DNS subject alternative name")
    if len(names) != 1:
        raise CertificateError(f"a cluster certificate has one DNS name, this one has {names}")
    return names[0]


def cluster_of_certificate_file(path: Path) -> str:
    """The cluster a certificate was issued to (its DNS SAN without the key id)."""
    return identity_of_certificate_file(path).split(".", 1)[0]
