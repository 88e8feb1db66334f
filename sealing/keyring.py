"""The hub's keyring: data keys per scope, wrapped by a key-encryption key (KEK).

Layout of `<data-dir>/keys/` (directory 0700, every file 0600, written whole or not at all):
  kek-<id>.key     the current KEK: 32 random bytes, base64
  keyring.json     every data key, wrapped by the KEK (AES-256-GCM, the key id and KEK id as
                   associated data), which scope it serves and whether new envelopes use it;
                   and the ids of shredded keys (no key material), so an envelope sealed with
                   one fails with a clear reason
  keyring.lock     held while the keyring is changed

Without the KEK file, `keyring.json` is useless; without `keyring.json`, every envelope is.

Rotation makes new keys and keeps old data keys, so old envelopes stay readable: a new KEK
re-wraps every data key (the old KEK file is then deleted); new data keys become the ones new
envelopes are sealed with. Shredding deletes every data key of a scope: envelopes sealed with
them can never be opened again, wherever their copies are (the append-only log, backups).

Several processes share one keyring (the hub, `fleetbus scheduler` processes): each reads the
file again whenever it changed on disk, so a shredded key is gone from every process at its
next use, and changes are made under an exclusive lock.
"""

from __future__ import annotations

import base64
import fcntl
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sealing.envelope import HUB_SCOPE, NONCE_SIZE
from sealing.errors import KeyringInvalid, KeyUnavailable, SealingError

KEY_SIZE = 32
KEYRING_FILE = "keyring.json"
LOCK_FILE = "keyring.lock"


class DataKeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    scope: str
    kek: str
    wrapped: str
    created: str
    active: bool = True


class ShreddedKey(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    scope: str
    at: str


class KeyringState(msgspec.Struct, frozen=True, kw_only=True):
    version: int = 1
    kek: str = ""
    keys: list[DataKeyRecord] = msgspec.field(default_factory=list)
    shredded: list[ShreddedKey] = msgspec.field(default_factory=list)


@dataclass(frozen=True)
class Rotation:
    """What one rotation did (ids only, never key material)."""

    kek: str
    previous_kek: str
    data_keys: list[str]
    rewrapped: int


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as e:
        raise KeyringInvalid(f"{what} is not base64") from e


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _dek_aad(key_id: str, kek_id: str) -> bytes:
    return f"fleetbus-data-key|{key_id}|{kek_id}".encode()


class Keyring:
    """Data keys by scope for sealing (`active_key`) and by id for opening (`key`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / KEYRING_FILE
        self._stamp: tuple[int, int, int] | None = None
        self._state = KeyringState()
        self._kek: bytes = b""
        self._plain: dict[str, bytes] = {}
        self._by_id: dict[str, DataKeyRecord] = {}
        self._active_by_scope: dict[str, DataKeyRecord] = {}
        self._shredded: dict[str, ShreddedKey] = {}

    @classmethod
    def open(cls, directory: Path) -> Keyring:
        """The keyring in `directory`, created (with a first KEK) when there is none."""
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        keyring = cls(directory)
        if not keyring.path.exists():
            with keyring._locked():
                if not keyring.path.exists():
                    kek_id = secrets.token_hex(6)
                    _write_private(keyring._kek_path(kek_id), _b64(os.urandom(KEY_SIZE)).encode())
                    keyring._write(KeyringState(kek=kek_id))
        keyring._reload()
        return keyring

    # --- reading ---------------------------------------------------------------------------

    def _kek_path(self, kek_id: str) -> Path:
        return self.directory / f"kek-{kek_id}.key"

    def _reload(self) -> None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError as e:
            raise KeyringInvalid(f"the keyring {self.path} is missing") from e
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp == self._stamp:
            return
        try:
            state = msgspec.json.decode(self.path.read_bytes(), type=KeyringState)
        except (OSError, msgspec.DecodeError) as e:
            raise KeyringInvalid(f"cannot read the keyring {self.path}: {e}") from e
        kek_path = self._kek_path(state.kek)
        try:
            kek = _unb64(kek_path.read_text().strip(), f"the key-encryption key {kek_path}")
        except FileNotFoundError as e:
            raise KeyringInvalid(
                f"the key-encryption key {kek_path} that {self.path} names is missing"
            ) from e
        if len(kek) != KEY_SIZE:
            raise KeyringInvalid(f"the key-encryption key {kek_path} is not {KEY_SIZE} bytes")
        self._state, self._kek, self._plain, self._stamp = state, kek, {}, stamp
        self._by_id = {record.id: record for record in state.keys}
        self._active_by_scope = {record.scope: record for record in state.keys if record.active}
        self._shredded = {shredded.id: shredded for shredded in state.shredded}

    def _unwrap(self, record: DataKeyRecord, kek: bytes, kek_id: str) -> bytes:
        sealed = _unb64(record.wrapped, f"data key {record.id}")
        try:
            return AESGCM(kek).decrypt(
                sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], _dek_aad(record.id, kek_id)
            )
        except InvalidTag as e:
            raise KeyringInvalid(
                f"data key {record.id} does not unwrap with key-encryption key {kek_id}: the "
                f"keyring {self.path} or the KEK file was altered or replaced"
            ) from e

    def key(self, key_id: str) -> bytes:
        self._reload()
        plain = self._plain.get(key_id)
        if plain is not None:
            return plain
        record = self._by_id.get(key_id)
        if record is not None:
            plain = self._unwrap(record, self._kek, self._state.kek)
            self._plain[key_id] = plain
            return plain
        shredded = self._shredded.get(key_id)
        if shredded is not None:
            raise KeyUnavailable(
                key_id, f"it was shredded at {shredded.at} (scope {shredded.scope})"
            )
        raise KeyUnavailable(key_id, f"it is not in this hub's keyring ({self.path})")

    def active_key(self, scope: str) -> tuple[str, bytes]:
        self._reload()
        record = self._active_by_scope.get(scope)
        if record is None:
            self.ensure([scope])
            record = self._active_by_scope[scope]
        return record.id, self.key(record.id)

    def ensure(self, scopes: Iterable[str]) -> None:
        """Give every scope in `scopes` an active data key, in one write for all that lack one
        (a decision over thousands of clusters must not rewrite the keyring once per cluster)."""
        self._reload()
        if all(scope in self._active_by_scope for scope in scopes):
            return
        with self._locked():
            self._stamp = None
            self._reload()
            created = _now_text()
            missing = sorted({s for s in scopes if s not in self._active_by_scope})
            if not missing:
                return
            fresh = [self._new_record(s, self._kek, self._state.kek, created) for s in missing]
            self._write(msgspec.structs.replace(self._state, keys=[*self._state.keys, *fresh]))
            self._stamp = None
            self._reload()

    def scopes(self) -> list[str]:
        self._reload()
        return sorted({record.scope for record in self._state.keys})

    def describe(self) -> KeyringState:
        """The keyring's ids and scopes (the wrapped keys are blanked)."""
        self._reload()
        return msgspec.structs.replace(
            self._state,
            keys=[msgspec.structs.replace(r, wrapped="") for r in self._state.keys],
        )

    # --- changing --------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, state: KeyringState) -> None:
        _write_private(self.path, msgspec.json.format(msgspec.json.encode(state), indent=2))

    def _new_record(self, scope: str, kek: bytes, kek_id: str, created: str) -> DataKeyRecord:
        key_id = f"{scope}/{secrets.token_hex(8)}"
        nonce = os.urandom(NONCE_SIZE)
        wrapped = nonce + AESGCM(kek).encrypt(nonce, os.urandom(KEY_SIZE), _dek_aad(key_id, kek_id))
        return DataKeyRecord(
            id=key_id, scope=scope, kek=kek_id, wrapped=_b64(wrapped), created=created
        )

    def rotate(
        self, now: datetime, *, kek: bool = True, scopes: list[str] | None = None
    ) -> Rotation:
        """A new KEK (every data key re-wrapped) and/or new data keys for `scopes`.

        `scopes=None` rotates the data keys of every scope the keyring has; `[]` none. Old
        data keys stay (inactive) so that what they sealed stays readable."""
        at = now.isoformat()
        with self._locked():
            self._stamp = None
            self._reload()
            state, old_kek, old_id = self._state, self._kek, self._state.kek
            new_kek, new_id = old_kek, old_id
            if kek:
                new_id = secrets.token_hex(6)
                new_kek = os.urandom(KEY_SIZE)
                _write_private(self._kek_path(new_id), _b64(new_kek).encode())
            keys: list[DataKeyRecord] = []
            for record in state.keys:
                if kek:
                    plain = self._unwrap(record, old_kek, old_id)
                    nonce = os.urandom(NONCE_SIZE)
                    wrapped = nonce + AESGCM(new_kek).encrypt(
                        nonce, plain, _dek_aad(record.id, new_id)
                    )
                    record = msgspec.structs.replace(record, kek=new_id, wrapped=_b64(wrapped))
                keys.append(record)
            wanted = {r.scope for r in keys} | {HUB_SCOPE} if scopes is None else set(scopes)
            fresh = [self._new_record(scope, new_kek, new_id, at) for scope in sorted(wanted)]
            keys = [
                msgspec.structs.replace(r, active=False) if r.scope in wanted else r for r in keys
            ]
            self._write(msgspec.structs.replace(state, kek=new_id, keys=[*keys, *fresh]))
            if kek:
                self._kek_path(old_id).unlink(missing_ok=True)
            self._stamp = None
            self._reload()
        return Rotation(
            kek=new_id,
            previous_kek=old_id,
            data_keys=[r.id for r in fresh],
            rewrapped=len(keys) if kek else 0,
        )

    def shred(self, scope: str, now: datetime) -> list[str]:
        """Delete every data key of `scope`; the ids of the keys deleted."""
        if scope == HUB_SCOPE:
            raise SealingError(
                "the hub's own data keys seal every published taskset; they cannot be shredded"
            )
        at = now.isoformat()
        with self._locked():
            self._stamp = None
            self._reload()
            gone = [r for r in self._state.keys if r.scope == scope]
            if gone:
                self._write(
                    msgspec.structs.replace(
                        self._state,
                        keys=[r for r in self._state.keys if r.scope != scope],
                        shredded=[
                            *self._state.shredded,
                            *(ShreddedKey(id=r.id, scope=scope, at=at) for r in gone),
                        ],
                    )
                )
            self._stamp = None
            self._reload()
        return [r.id for r in gone]


def _now_text() -> str:
    """When a data key was made on first use (a record, not a decision input)."""
    return datetime.now(UTC).isoformat()
