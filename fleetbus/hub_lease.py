"""Which `fleetbus up` process runs a hub on a NATS cluster: a lease in JetStream, not a file.

On its embedded nats-server a hub is one process, kept alone by its data dir's lock
(`DataDir.lock`). On a NATS cluster (`--nats-url`) the hub's state is in JetStream, and two
`fleetbus up` processes with copies of one data dir, on two hosts, would both run the services
that must run once per hub (cluster access and revocation, notifications, sources, the
archiver): the lock of one data dir cannot see the other. So the hub process holds the lease
`fleet.lease.hub` in stream LEASES: one message written compare-and-set
(`Nats-Expected-Last-Subject-Sequence`, 0 for the first) with a per-message TTL, renewed well
inside it. A second `fleetbus up` waits at most one TTL for it (time enough for the lease of a
killed process to lapse, so a restart after `kill -9` takes over) and is then refused, naming
the holder; more API processes are `fleetbus api`. A holder whose lease another process took
stops the hub.

A hot standby (`fleetbus up --standby`) waits for the lease as long as it takes instead: it
runs none of the once-per-hub services until it holds the lease, and takes it within one TTL of
the holder's death (at once when the holder stops and releases it). Who took over from whom,
and when, is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from events.errors import EventLogUnavailable
from events.port import JetStreamPort
from events.store import EventStore
from events.streams import LEASES_STREAM
from fleetbus.errors import DataDirLocked

log = logging.getLogger(__name__)

HUB_LEASE_SUBJECT = "fleet.lease.hub"
HUB_LEASE_TTL_S = 15
HUB_LEASE_TTL_RANGE_S = (3, 300)
"""The TTLs `fleetbus up --lease-ttl` accepts: renewals every third of it must fit."""


def hub_holder(data_dir: str) -> str:
    """How a hub process names itself in the lease: host, process id, data dir."""
    return f"{socket.gethostname()}:{os.getpid()}:{data_dir}"


@dataclass
class HubLease:
    store: EventStore
    holder: str
    ttl_s: int = HUB_LEASE_TTL_S
    seq: int = field(default=0, init=False)
    taken_by: str = field(default="", init=False)
    """Who took the lease from this process ("" while it holds it)."""
    waiting_for: str = field(default="", init=False)
    """The holder this process waits for while it does ("" when none)."""
    took_over_from: str = field(default="", init=False)
    """The holder this process waited for before it took the lease ("" if none was seen)."""
    acquired_at: datetime | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.port = JetStreamPort(self.store.api)

    async def stream_exists(self) -> bool:
        """Whether stream LEASES exists (it is not created or changed here)."""
        return await self.port.stream_info(LEASES_STREAM) is not None

    async def current(self) -> tuple[int, str]:
        """(sequence, holder) of the lease, (0, "") when nobody holds it."""
        reply = await self.port.last_message(LEASES_STREAM, HUB_LEASE_SUBJECT)
        if reply is None:
            return 0, ""
        body = reply.json()
        holder = str(body.get("holder", "")) if isinstance(body, dict) else ""
        return int(reply.headers.get("Nats-Sequence", "0")), holder

    async def acquire(self, *, wait_s: float | None = None, standby: bool = False) -> None:
        """Hold the lease, waiting up to `wait_s` (the TTL by default) for another holder's to
        lapse; `DataDirLocked` naming the holder when it does not. A `standby` waits as long
        as it takes, riding out NATS being unreachable meanwhile."""
        deadline = time.monotonic() + (self.ttl_s + 2 if wait_s is None else wait_s)
        self.waiting_for = ""
        unreachable = False
        while True:
            try:
                seq, holder = await self.current()
                if seq == 0 or holder == self.holder:
                    if await self._write(seq):
                        self._took(self.waiting_for)
                        return
                    continue  # someone wrote between our read and write: read again
            except EventLogUnavailable as e:
                if not standby:
                    raise
                if not unreachable:
                    log.warning("standby: cannot read the hub lease now (%s); trying again", e)
                    unreachable = True
                await asyncio.sleep(1.0)
                continue
            unreachable = False
            if not standby and time.monotonic() >= deadline:
                raise DataDirLocked(
                    f"another `fleetbus up` runs this hub: {holder} holds its lease "
                    f"({HUB_LEASE_SUBJECT}, renewed every {self.ttl_s // 3} s); stop it first, "
                    "serve more API processes with `fleetbus api`, or wait for the lease as a "
                    "hot standby with `fleetbus up --standby`"
                )
            if holder != self.waiting_for:
                if standby:
                    log.info(
                        "standby: the hub lease is held by %s; taking over once it stops or "
                        "its lease lapses",
                        holder,
                    )
                else:
                    log.warning(
                        "the hub lease is held by %s; waiting up to %d s for it to lapse",
                        holder,
                        self.ttl_s,
                    )
                self.waiting_for = holder
            await asyncio.sleep(0.5)

    def _took(self, previous: str) -> None:
        self.waiting_for = ""
        self.acquired_at = datetime.now(UTC)
        self.took_over_from = previous
        when = self.acquired_at.isoformat(timespec="milliseconds")
        if previous:
            log.warning(
                "%s took over the hub from %s at %s (its lease was released or lapsed)",
                self.holder,
                previous,
                when,
            )
        else:
            log.info("this process holds the hub lease (%s) since %s", self.holder, when)

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew the lease until `stop` is set; set `stop` if another process took it."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.ttl_s / 3)
                return
            except TimeoutError:
                pass
            try:
                taken_by = "" if await self._write(self.seq) else await self._write_again()
            except EventLogUnavailable as e:
                log.warning("cannot renew the hub lease now: %s", e)
                continue
            if taken_by:
                self.taken_by = taken_by
                log.error("the hub lease was taken by %s: this hub process stops", self.taken_by)
                stop.set()
                return

    async def _write_again(self) -> str:
        """After a refused renewal: the other process holding the lease, or "" once this one
        holds it again.

        A renewal is refused when the lease is not at the sequence this process last wrote:
        it lapsed (NATS unreachable longer than the TTL), a renewal was stored but its answer
        lost (the lease is this process's own, at a later sequence), or another process took
        it. In the first two cases the lease is written again on what is there, unless another
        process is quicker.
        """
        seq, holder = await self.current()
        if holder and holder != self.holder:
            return holder
        if await self._write(seq):
            return ""
        _, holder = await self.current()
        return "" if holder == self.holder else holder or "another process"

    async def release(self) -> None:
        if self.seq:
            try:
                await self.port.delete_message(LEASES_STREAM, self.seq)
            except EventLogUnavailable as e:
                log.warning("the hub lease was not released (it lapses by itself): %s", e)
            else:
                log.info("%s released the hub lease (a standby takes it at once)", self.holder)
            self.seq = 0

    async def _write(self, expected: int) -> bool:
        """Compare-and-set the lease; False when another write came first."""
        headers = {
            "Nats-Expected-Last-Subject-Sequence": str(expected),
            "Nats-TTL": f"{self.ttl_s}s",
        }
        reply = await self.port.request_once(
            HUB_LEASE_SUBJECT, orjson.dumps({"holder": self.holder}), headers
        )
        if reply.status is not None:
            raise EventLogUnavailable(f"hub lease write: status {reply.status}")
        ack = reply.json()
        error = ack.get("error") if isinstance(ack, dict) else None
        if error:
            if int(error.get("err_code", 0)) in (10071, 10164):
                return False
            raise EventLogUnavailable(f"hub lease write refused: {error.get('description')}")
        self.seq = int(ack["seq"])
        return True
