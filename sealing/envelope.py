"""Envelopes: one secret sealed with one data key, the key's id written in front.

A value is sealed with AES-256-GCM (`cryptography`, imported when something is sealed; opened
through `sealing.gcm`), a fresh 96-bit nonce each time, and associated data that binds the key
id and what the value is for (a DESIRED subject, a chart address), so an envelope moved to
another place, or altered by one bit, does not open.

Two forms:
- bytes (`FBSEAL1\\n`, key id length, key id, nonce, ciphertext+tag): whole payloads, such as a
  cluster's ClusterTask in DESIRED or a chart archive;
- text (`fbsealed:v1:<key id>:<base64url>`): one value inside a JSON document (a Secret's data
  entry, a Helm value), so the document keeps its shape and everything else stays readable.
  The sealed plaintext is the value's JSON, so numbers, lists and mappings come back as such.

Data keys belong to a scope: `hub` for what the whole hub works with (published tasksets,
selector overrides, chart archives), `cluster:<name>` for what only that cluster may read.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import msgspec

from sealing import gcm
from sealing.errors import EnvelopeInvalid

MAGIC = b"FBSEAL1\n"
TEXT_PREFIX = "fbsealed:v1:"
NONCE_SIZE = 12
TAG_SIZE = 16
HUB_SCOPE = "hub"
VALUE_CONTEXT = b"value"


def cluster_scope(cluster: str) -> str:
    return f"cluster:{cluster}"


def scope_of_key(key_id: str) -> str:
    """`cluster:web-1/3f9a...` -> `cluster:web-1`."""
    return key_id.rpartition("/")[0]


class DataKeys(Protocol):
    """Where data keys come from (the hub's `Keyring`, or an edge's key cache)."""

    def active_key(self, scope: str) -> tuple[str, bytes]:
        """The id and key that new envelopes of `scope` are sealed with."""
        ...

    def key(self, key_id: str) -> bytes:
        """The key with id `key_id`; raises `KeyUnavailable` when it is unknown or shredded."""
        ...


@runtime_checkable
class KeyProvisioning(Protocol):
    """A key source that can create the active keys of many scopes at once (`Keyring`)."""

    def ensure(self, scopes: Iterable[str]) -> None: ...


def _aad(header: bytes, context: bytes) -> bytes:
    return header + b"|" + context


def sealed_size(plaintext_size: int, key_id: str) -> int:
    """The size of the bytes envelope of `plaintext_size` bytes under `key_id`."""
    return len(MAGIC) + 1 + len(key_id.encode()) + NONCE_SIZE + plaintext_size + TAG_SIZE


def _encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    # Imported here: an edge only opens envelopes (`sealing.gcm`) and never loads it.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key).encrypt(nonce, plaintext, aad)


def seal_bytes(keys: DataKeys, scope: str, plaintext: bytes, context: bytes) -> bytes:
    key_id, key = keys.active_key(scope)
    kid = key_id.encode()
    header = MAGIC + len(kid).to_bytes(1, "big") + kid
    nonce = os.urandom(NONCE_SIZE)
    return header + nonce + _encrypt(key, nonce, plaintext, _aad(header, context))


def is_sealed_bytes(data: bytes) -> bool:
    return data.startswith(MAGIC)


def key_id_of_bytes(data: bytes) -> str:
    if not is_sealed_bytes(data) or len(data) < len(MAGIC) + 1:
        raise EnvelopeInvalid("not a fleetbus envelope (it does not start with FBSEAL1)")
    length = data[len(MAGIC)]
    end = len(MAGIC) + 1 + length
    if length == 0 or len(data) < end + NONCE_SIZE + TAG_SIZE:
        raise EnvelopeInvalid("a fleetbus envelope cut short (no room for key id, nonce, tag)")
    try:
        return data[len(MAGIC) + 1 : end].decode()
    except UnicodeDecodeError as e:
        raise EnvelopeInvalid("a fleetbus envelope with an unreadable key id") from e


def open_bytes(keys: DataKeys, data: bytes, context: bytes, what: str) -> bytes:
    """The plaintext of a bytes envelope; `what` names it in errors (e.g. the subject)."""
    key_id = key_id_of_bytes(data)
    end = len(MAGIC) + 1 + len(key_id.encode())
    header, nonce, sealed = data[:end], data[end : end + NONCE_SIZE], data[end + NONCE_SIZE :]
    key = keys.key(key_id)
    try:
        return gcm.decrypt(key, nonce, sealed, _aad(header, context))
    except gcm.TagMismatch as e:
        raise EnvelopeInvalid(
            f"{what}: the envelope sealed with data key {key_id} does not open: it was "
            "altered, or was sealed for another place"
        ) from e


def is_sealed_text(value: object) -> bool:
    return isinstance(value, str) and value.startswith(TEXT_PREFIX)


def seal_value(keys: DataKeys, scope: str, value: Any) -> str:
    """`value` (any JSON value) as a text envelope; an envelope already is one."""
    if is_sealed_text(value):
        return str(value)
    key_id, key = keys.active_key(scope)
    nonce = os.urandom(NONCE_SIZE)
    aad = _aad(key_id.encode(), VALUE_CONTEXT)
    sealed = nonce + _encrypt(key, nonce, msgspec.json.encode(value), aad)
    return f"{TEXT_PREFIX}{key_id}:{base64.urlsafe_b64encode(sealed).decode().rstrip('=')}"


def key_id_of_text(text: str) -> str:
    if not is_sealed_text(text):
        raise EnvelopeInvalid("not a sealed value (it does not start with fbsealed:v1:)")
    key_id, sep, _ = text[len(TEXT_PREFIX) :].rpartition(":")
    if not sep or not key_id:
        raise EnvelopeInvalid("a sealed value without a key id")
    return key_id


def open_value(keys: DataKeys, text: str) -> Any:
    """The value a text envelope holds."""
    key_id = key_id_of_text(text)
    payload = text.rpartition(":")[2]
    try:
        sealed = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    except (binascii.Error, ValueError) as e:
        raise EnvelopeInvalid(f"a value sealed with data key {key_id} is not base64") from e
    if len(sealed) < NONCE_SIZE + TAG_SIZE:
        raise EnvelopeInvalid(f"a value sealed with data key {key_id} is cut short")
    key = keys.key(key_id)
    try:
        plain = gcm.decrypt(
            key, sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], _aad(key_id.encode(), VALUE_CONTEXT)
        )
    except gcm.TagMismatch as e:
        raise EnvelopeInvalid(
            f"a value sealed with data key {key_id} does not open: it was altered"
        ) from e
    try:
        return msgspec.json.decode(plain)
    except msgspec.DecodeError as e:
        raise EnvelopeInvalid(f"a value sealed with data key {key_id} is not JSON") from e
