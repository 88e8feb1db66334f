"""AES-GCM opening through the interpreter's libcrypto agrees with `cryptography` byte for
byte, and refuses every altered byte, wrong key and wrong associated data."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sealing import gcm


def test_envelopes_open_through_the_interpreters_libcrypto_on_this_platform() -> None:
    assert gcm.backend() == "libcrypto"


@pytest.mark.parametrize("key_size", [16, 24, 32])
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096, 1_000_003])
def test_what_cryptography_seals_opens_to_the_same_plaintext(key_size: int, size: int) -> None:
    key = os.urandom(key_size)
    nonce = os.urandom(12)
    plaintext = os.urandom(size)
    aad = b"FBSEAL1\n|fleet.desired.c.web"
    sealed = AESGCM(key).encrypt(nonce, plaintext, aad)
    assert gcm.decrypt(key, nonce, sealed, aad) == plaintext


def test_empty_associated_data_opens() -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, b"payload", None)
    assert gcm.decrypt(key, nonce, sealed, b"") == b"payload"


@pytest.mark.parametrize("position", [0, 5, -17, -1])
def test_a_single_altered_bit_does_not_open(position: int) -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    sealed = bytearray(AESGCM(key).encrypt(nonce, b"the desired state " * 8, b"ctx"))
    sealed[position] ^= 0x01
    with pytest.raises(gcm.TagMismatch):
        gcm.decrypt(key, nonce, bytes(sealed), b"ctx")


def test_another_key_nonce_or_context_does_not_open() -> None:
    key, nonce = os.urandom(32), os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, b"secret", b"fleet.desired.a.web")
    with pytest.raises(gcm.TagMismatch):
        gcm.decrypt(os.urandom(32), nonce, sealed, b"fleet.desired.a.web")
    with pytest.raises(gcm.TagMismatch):
        gcm.decrypt(key, os.urandom(12), sealed, b"fleet.desired.a.web")
    with pytest.raises(gcm.TagMismatch):
        gcm.decrypt(key, nonce, sealed, b"fleet.desired.b.web")


def test_data_shorter_than_a_tag_does_not_open() -> None:
    with pytest.raises(gcm.TagMismatch):
        gcm.decrypt(os.urandom(32), os.urandom(12), b"short", b"")


def test_a_key_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="16, 24 or 32 bytes, not 20"):
        gcm.decrypt(os.urandom(20), os.urandom(12), os.urandom(32), b"")


def test_without_a_usable_libcrypto_envelopes_open_through_cryptography(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gcm, "_libcrypto", lambda: None)
    assert gcm.backend() == "cryptography"
    key, nonce = os.urandom(32), os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, b"payload", b"ctx")
    assert gcm.decrypt(key, nonce, sealed, b"ctx") == b"payload"
    with pytest.raises(gcm.TagMismatch):
        gcm.decrypt(key, nonce, sealed, b"other")
