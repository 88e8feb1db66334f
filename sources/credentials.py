"""Credentials for private repositories, registries and Git servers, kept by the hub.

They live in `<data-dir>/source-credentials.json`, mode 0600, written whole or not at all
(`access.private_files`), and are referred to by name everywhere else: a source definition on
the log carries the name only, listings show the name, the kind and the user name, and no
message leaves `sources` with a secret in it (`Credential.scrub`). Kinds:

- `basic`: a user name and password (Helm repositories, OCI registries, Git over HTTP(S));
- `token`: a bearer token (Git over HTTP(S) as `Authorization: Bearer`; OCI registries get it
  as the password of a registry login, as `helm registry login` takes one);
- `ssh-key`: a private key for Git over SSH, with the known-hosts lines its server's host key
  is checked against (required: an unknown or changed host key is always refused).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

import msgspec

from access.private_files import write_private
from sources.errors import CredentialsNotFound, InvalidSourceReference
from taskset.names import check_name

CREDENTIALS_FILE = "source-credentials.json"
REDACTED = "***"


class Credential(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["basic", "token", "ssh-key"]
    username: str = ""
    password: str = ""
    token: str = ""
    ssh_key: str = ""
    known_hosts: str = ""

    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.token, self.ssh_key) if s]

    def scrub(self, message: str) -> str:
        """`message` with every secret of this credential (and its lines, for keys) masked."""
        for secret in self.secrets():
            message = message.replace(secret, REDACTED)
            for line in secret.splitlines():
                if len(line) >= 8:
                    message = message.replace(line, REDACTED)
        return message

    def check(self) -> Credential:
        if self.kind == "basic" and not (self.username and self.password):
            raise InvalidSourceReference("basic credentials need a user name and a password")
        if self.kind == "token" and not self.token:
            raise InvalidSourceReference("token credentials need a token")
        if self.kind == "ssh-key":
            if "PRIVATE KEY" not in self.ssh_key:
                raise InvalidSourceReference(
                    "ssh-key credentials need a PEM or OpenSSH private key"
                )
            check_known_hosts(self.known_hosts)
        return self


def check_known_hosts(text: str) -> None:
    """known_hosts lines (`host[,host] keytype base64-key`, as `ssh-keyscan` prints them): the
    SSH server's key is always checked, so there must be at least one."""
    lines = [
        (number, line.split())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise InvalidSourceReference(
            "ssh-key credentials need the SSH server's host key as known_hosts lines "
            "(--known-hosts FILE, e.g. from `ssh-keyscan -p PORT HOST`): the host key is "
            "always checked"
        )
    for number, fields in lines:
        marker = 1 if fields[0].startswith("@") else 0
        if len(fields) < 3 + marker:
            raise InvalidSourceReference(
                f"known_hosts line {number} is not `host keytype key`: "
                f"it has {len(fields)} field(s)"
            )


class CredentialSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What may be shown of a credential."""

    name: str
    kind: str
    username: str = ""


class CredentialStore:
    """The hub's source credentials, by name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> CredentialStore:
        return cls(data_dir / CREDENTIALS_FILE)

    def _load(self) -> dict[str, Credential]:
        if not self.path.exists():
            return {}
        return msgspec.json.decode(self.path.read_bytes(), type=dict[str, Credential])

    def set(self, name: str, credential: Credential) -> None:
        check_name("credentials", name)
        credential.check()
        with self._lock:
            stored = self._load()
            stored[name] = credential
            write_private(self.path, msgspec.json.encode(stored))

    def remove(self, name: str) -> None:
        with self._lock:
            stored = self._load()
            if stored.pop(name, None) is None:
                raise CredentialsNotFound(f"no source credentials named {name}")
            write_private(self.path, msgspec.json.encode(stored))

    def get(self, name: str) -> Credential:
        credential = self._load().get(name)
        if credential is None:
            raise CredentialsNotFound(
                f"no source credentials named {name}: add them with "
                f"`fleetbus source credentials set {name}`"
            )
        return credential

    def summaries(self) -> list[CredentialSummary]:
        return [
            CredentialSummary(name=name, kind=c.kind, username=c.username)
            for name, c in sorted(self._load().items())
        ]
