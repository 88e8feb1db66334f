"""What a hub signs with, kept sealed in JetStream so that every hub process has it.

The CA (`pki/ca.crt`, `pki/ca.key`: cluster certificates) and the NATS operator and accounts
(`nats-auth.json`: cluster users' credentials) are files of the data dir `fleetbus up` first
started in. It copies each into stream HUB_SECRETS at every start (one message per file on
`fleet.hubsecret.<name>`, only when it changed), sealed with the hub's data key
(`sealing.envelope.seal_bytes`, the subject as associated data): whoever reads the stream
without the hub's keyring learns nothing, and an envelope moved to another subject does not
open. An API process (`fleetbus api`) whose data dir lacks them takes them from there at its
start, written 0600, so its data dir needs only its NATS credentials and the keyring.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from access.private_files import write_private
from events.errors import EventLogUnavailable
from events.port import JetStreamPort
from events.store import EventStore
from events.streams import HUB_SECRETS_PREFIX, HUB_SECRETS_STREAM, hub_secrets_stream
from fleetbus.errors import HubNotFound
from sealing.envelope import HUB_SCOPE, DataKeys, open_bytes, seal_bytes

log = logging.getLogger(__name__)

HUB_SECRET_FILES = ("pki/ca.crt", "pki/ca.key", "nats-auth.json")
TICKET_KEY = "stream-ticket-key"
"""The key that signs the API's stream tickets (`api.auth.StreamTickets`): one for every API
process, so a ticket one issued opens the event stream on any other."""


def secret_subject(name: str) -> str:
    """`pki/ca.key` -> `fleet.hubsecret.pki-ca-key`."""
    return f"{HUB_SECRETS_PREFIX}.{name.replace('/', '-').replace('.', '-')}"


@dataclass
class HubSecrets:
    store: EventStore
    keys: DataKeys

    def __post_init__(self) -> None:
        self.port = JetStreamPort(self.store.api)

    async def ensure_stream(self, replicas: int = 1) -> None:
        await self.store.ensure_stream(hub_secrets_stream(replicas), keep=("num_replicas",))

    async def stored(self, name: str) -> bytes | None:
        """The file `name` as stored (opened), None when it is not there."""
        subject = secret_subject(name)
        reply = await self.port.last_message(HUB_SECRETS_STREAM, subject)
        if reply is None:
            return None
        return open_bytes(self.keys, reply.data, subject.encode(), subject)

    async def publish(self, root: Path) -> list[str]:
        """Store each file of `root` that is missing or different in the stream; the names
        stored."""
        published: list[str] = []
        for name in HUB_SECRET_FILES:
            plain = _read(root / name)
            if plain is None or await self.stored(name) == plain:
                continue
            subject = secret_subject(name)
            sealed = seal_bytes(self.keys, HUB_SCOPE, plain, subject.encode())
            reply = await self.port.request(subject, sealed, {})
            answer = reply.json()
            if reply.status is not None or (isinstance(answer, dict) and answer.get("error")):
                raise EventLogUnavailable(f"storing {subject} failed: {answer or reply.status}")
            published.append(name)
        if published:
            log.info("the hub's %s are in JetStream (sealed) for its other processes", published)
        return published

    async def ticket_key(self) -> bytes:
        """The hub's stream-ticket key, made (32 random bytes) by the first process to ask."""
        subject = secret_subject(TICKET_KEY)
        for _ in range(3):
            stored = await self.stored(TICKET_KEY)
            if stored is not None:
                return stored
            key = os.urandom(32)
            sealed = seal_bytes(self.keys, HUB_SCOPE, key, subject.encode())
            reply = await self.port.request_once(
                subject, sealed, {"Nats-Expected-Last-Subject-Sequence": "0"}
            )
            answer = reply.json()
            error = answer.get("error") if isinstance(answer, dict) else None
            if reply.status is None and not error:
                return key
            if not error or int(error.get("err_code", 0)) not in (10071, 10164):
                raise EventLogUnavailable(f"storing {subject} failed: {error or reply.status}")
            # Another process made it first: read theirs.
        raise EventLogUnavailable(f"{subject}: no stream-ticket key could be read or stored")

    async def restore(self, root: Path) -> list[str]:
        """Write each file `root` lacks from the stream (0600); the names written. Refused,
        writing nothing, when the stream lacks any of them."""
        wanted = [name for name in HUB_SECRET_FILES if not (root / name).is_file()]
        found: dict[str, bytes] = {}
        for name in wanted:
            plain = await self.stored(name)
            if plain is None:
                raise HubNotFound(
                    f"the hub's NATS holds no {name} ({secret_subject(name)} in "
                    f"{HUB_SECRETS_STREAM}): start `fleetbus up` of this version once, or "
                    f"copy {name} from the hub's data dir"
                )
            found[name] = plain
        for name, plain in found.items():
            path = root / name
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private(path, plain)
        return list(found)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
