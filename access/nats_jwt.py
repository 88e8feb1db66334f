"""NATS decentralized-auth JWTs: operator, account and user claims, signed with nkeys.

nats-server in operator mode trusts one operator key; the operator signs account JWTs, each
account signs its users' JWTs. A JWT is `header.claims.signature`, each part base64url without
padding; the header says `ed25519-nkey`, the signature is the issuer's Ed25519 signature of
`header.claims`, and `jti` is the base32 SHA-512/256 of the claims written with an empty
`jti` (the form the nats `jwt/v2` library writes and nats-server reads).

The claim shapes are the nats `jwt/v2` ones, written here as plain dicts so that nothing in
them depends on a third-party encoder's quirks; `decode` reads any of them back (and checks
the signature), which is how the tests and `nats_accounts` look inside.

Keys come from the `nkeys` package. A seed is the secret; a public key (`O…`, `A…`, `U…`)
names an operator, an account or a user.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys
import orjson

from access.errors import AccessError

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
UNLIMITED = -1

_ROLE_PREFIX = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,
    "account": nkeys.PREFIX_BYTE_ACCOUNT,
    "user": nkeys.PREFIX_BYTE_USER,
}


class JwtError(AccessError):
    """A NATS JWT or nkey that is malformed, wrongly signed or of the wrong kind."""


@dataclass(frozen=True)
class Nkey:
    """An nkey pair known by its seed (`S…`); `public` names it."""

    seed: str

    @property
    def keypair(self) -> nkeys.KeyPair:
        try:
            return nkeys.from_seed(self.seed.encode())
        except nkeys.NkeysError as e:
            raise JwtError(f"not a valid nkey seed: {type(e).__name__}") from e

    @property
    def public(self) -> str:
        return str(self.keypair.public_key.decode())

    def sign(self, data: bytes) -> bytes:
        return bytes(self.keypair.sign(data))

    def __repr__(self) -> str:  # the seed is a secret: never in a repr or a log line
        return f"Nkey({self.public})"


def new_nkey(role: str, raw_seed: bytes | None = None) -> Nkey:
    """A new nkey for `role` (operator, account, user); `raw_seed` (32 bytes) makes it
    deterministic, for keys derived from a secret."""
    seed = raw_seed if raw_seed is not None else os.urandom(32)
    if len(seed) != 32:
        raise JwtError(f"an nkey seed is 32 bytes, not {len(seed)}")
    return Nkey(nkeys.encode_seed(seed, _ROLE_PREFIX[role]).decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jti(claims: Mapping[str, Any]) -> str:
    unsigned = orjson.dumps({**claims, "jti": ""})
    digest = hashlib.new("sha512_256", unsigned).digest()
    return base64.b32encode(digest).rstrip(b"=").decode()


def encode(claims: Mapping[str, Any], issuer: Nkey) -> str:
    """Sign `claims` (with `iss` set to the issuer's public key and a fresh `jti`)."""
    body = {**claims, "iss": issuer.public}
    body["jti"] = _jti(body)
    head = _b64(orjson.dumps(HEADER))
    payload = _b64(orjson.dumps(body))
    signature = issuer.sign(f"{head}.{payload}".encode())
    return f"{head}.{payload}.{_b64(signature)}"


def decode(token: str) -> dict[str, Any]:
    """The claims of `token`, after checking its form and its issuer's signature."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("a NATS JWT has three dot-separated parts")
    try:
        header = orjson.loads(_unb64(parts[0]))
        claims = orjson.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (ValueError, orjson.JSONDecodeError) as e:
        raise JwtError(f"malformed NATS JWT: {e}") from e
    if header != HEADER or not isinstance(claims, dict):
        raise JwtError(f"not a NATS nkey JWT (header {header})")
    issuer = str(claims.get("iss", ""))
    try:
        verifier = nacl.signing.VerifyKey(_raw_public_key(issuer))
        verifier.verify(f"{parts[0]}.{parts[1]}".encode(), signature)
    except (nacl.exceptions.BadSignatureError, ValueError) as e:
        raise JwtError(f"the JWT's signature is not its issuer's ({issuer})") from e
    return claims


def _raw_public_key(public: str) -> bytes:
    """The 32 Ed25519 bytes of a public nkey (base32: role byte, key, CRC-16)."""
    try:
        raw = base64.b32decode(public + "=" * (-len(public) % 8))
    except ValueError as e:
        raise ValueError(f"not a public nkey: {public!r}") from e
    if len(raw) != 35 or not nkeys.valid_public_prefix_byte(raw[0]):
        raise ValueError(f"not a public nkey: {public!r}")
    if nkeys.crc16(bytearray(raw[:-2])) != int.from_bytes(raw[-2:], "little"):
        raise ValueError(f"public nkey with a bad checksum: {public!r}")
    return raw[1:33]


def operator_jwt(operator: Nkey, name: str, *, system_account: str, iat: int) -> str:
    return encode(
        {
            "iat": iat,
            "name": name,
            "sub": operator.public,
            "nats": {"system_account": system_account, "type": "operator", "version": 2},
        },
        operator,
    )


@dataclass(frozen=True)
class JetStreamLimits:
    """An account's JetStream limits; -1 is unlimited, 0 storage on both means no JetStream."""

    memory_bytes: int = UNLIMITED
    storage_bytes: int = UNLIMITED
    streams: int = UNLIMITED
    consumers: int = UNLIMITED

    def claims(self) -> dict[str, int]:
        return {
            "mem_storage": self.memory_bytes,
            "disk_storage": self.storage_bytes,
            "streams": self.streams,
            "consumer": self.consumers,
        }


NO_JETSTREAM = JetStreamLimits(memory_bytes=0, storage_bytes=0, streams=0, consumers=0)


def account_jwt(
    account: Nkey,
    operator: Nkey,
    name: str,
    *,
    iat: int,
    jetstream: JetStreamLimits = NO_JETSTREAM,
    revocations: Mapping[str, int] | None = None,
    exports: list[dict[str, Any]] | None = None,
    imports: list[dict[str, Any]] | None = None,
) -> str:
    """An account's JWT: limits (JetStream's among them), revoked user keys (key → time:
    every user JWT of that key issued at or before it is refused), and the subjects it
    exports to and imports from other accounts."""
    nats: dict[str, Any] = {
        "limits": {
            "subs": UNLIMITED,
            "data": UNLIMITED,
            "payload": UNLIMITED,
            "imports": UNLIMITED,
            "exports": UNLIMITED,
            "wildcards": True,
            "conn": UNLIMITED,
            "leaf": UNLIMITED,
            **jetstream.claims(),
        },
        "default_permissions": {"pub": {}, "sub": {}},
        "type": "account",
        "version": 2,
    }
    if revocations:
        nats["revocations"] = dict(sorted(revocations.items()))
    if exports:
        nats["exports"] = exports
    if imports:
        nats["imports"] = imports
    return encode({"iat": iat, "name": name, "sub": account.public, "nats": nats}, operator)


def user_jwt(
    user_public: str,
    account: Nkey,
    name: str,
    *,
    iat: int,
    publish: Mapping[str, list[str]] | None = None,
    subscribe: Mapping[str, list[str]] | None = None,
    connection_types: list[str] | None = None,
    expires: int | None = None,
) -> str:
    """A user's JWT, signed by its account; `publish`/`subscribe` are `{"allow": [...],
    "deny": [...]}` as in a nats-server config (absent: everything); `expires` (Unix time):
    refused from then on."""
    nats: dict[str, Any] = {
        "pub": dict(publish or {}),
        "sub": dict(subscribe or {}),
        "subs": UNLIMITED,
        "data": UNLIMITED,
        "payload": UNLIMITED,
        "type": "user",
        "version": 2,
    }
    if connection_types:
        nats["allowed_connection_types"] = list(connection_types)
    claims: dict[str, Any] = {"iat": iat, "name": name, "sub": user_public, "nats": nats}
    if expires is not None:
        claims["exp"] = expires
    return encode(claims, account)


def credentials_file(jwt: str, seed: str) -> str:
    """A `.creds` file: the user JWT and its seed, the form nats-server and nats.py read."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )
