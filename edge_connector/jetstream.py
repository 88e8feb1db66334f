"""The connector's NATS adapter: its desired-state feeds, its outbox and its inventory sender.

This is the only module of `edge_connector` that speaks NATS; nothing from `nats` leaves it.

Two feeds implement `DesiredFeed`:
- `MirrorFeed` reads the leaf's filtered mirror of DESIRED (`DESIRED-<cluster>`, local domain)
  with an ordered consumer starting at the last message per subject: the full state at start,
  then every change, and it keeps working while the hub is unreachable.
- `DurableFeed` pulls the cluster's hub-provisioned durable consumer (`edge-<cluster>` on
  DESIRED, domain `hub`), for edges without a leaf (clusters that connect as plain clients).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api as js_api

from edge_connector.connector import Delivery
from edge_connector.errors import EdgeUnavailable, KeysUnreachable
from edge_connector.health import HubLinkState
from events import edges, subjects
from events.catalog import Report
from events.errors import EventLogUnavailable
from events.inventory import InventoryDigest, encode_inventory
from events.pull import ContinuousPull, PullSettings, status_of
from events.store import EventStore, connect
from events.streams import DESIRED_STREAM, DUPLICATE_WINDOW_S, HUB_DOMAIN, MAX_PAYLOAD, NANOS
from events.tasks import cancel_and_wait
from sealing.envelope import (
    cluster_scope,
    is_sealed_bytes,
    key_id_of_bytes,
    open_bytes,
    scope_of_key,
)
from sealing.errors import KeyUnavailable, SealingError
from sealing.keycache import KeyCache
from taskset.codec import CorruptPayload, decode_cluster_task
from taskset.model import ClusterTask

log = logging.getLogger(__name__)

OUTBOX_MAX_AGE_S = 7 * 24 * 3600
"""How long an edge keeps reports the hub has not sourced (a week of hub outage)."""
OUTBOX_MAX_BYTES = 1024 * 1024 * 1024
IN_PROGRESS_EVERY_S = 3.0
"""While a desired state's data key is fetched, the hub hears this often that it is in hand."""
DURABLE_HEARTBEAT_S = 5.0
"""The hub's idle heartbeat on a pending pull of the cluster's durable: two missed (11 s of
silence) and the pull is sent again. Every 2 s (5,000 heartbeats a second at 10,000 idle
clusters) kept a one-node hub so busy while 10,000 clusters connected that heartbeats came
late, every cluster sent its pull again, and the hub stopped answering anything."""


def outbox_config(cluster: str) -> dict[str, Any]:
    """The cluster's outbox: every report it writes, until the hub has sourced it."""
    return {
        "name": edges.outbox_stream(cluster),
        "subjects": [subjects.report_filter(cluster)],
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "max_age": OUTBOX_MAX_AGE_S * NANOS,
        "max_bytes": OUTBOX_MAX_BYTES,
        "duplicate_window": DUPLICATE_WINDOW_S * NANOS,
        "max_msg_size": MAX_PAYLOAD,
        "allow_direct": True,
    }


def mirror_config(cluster: str) -> dict[str, Any]:
    """The cluster's own slice of DESIRED, mirrored into the leaf's domain.

    The mirror asks the hub's consumer gate (`access.consumer_rules`) for its consumer: the
    cluster's certificate may not speak to the hub's JetStream API directly.
    """
    return {
        "name": edges.mirror_stream(cluster),
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "max_msgs_per_subject": 1,
        "max_msg_size": MAX_PAYLOAD,
        "mirror": {
            "name": DESIRED_STREAM,
            "filter_subject": subjects.desired_filter(cluster),
            "external": {
                "api": edges.consumer_gate_prefix(cluster),
                "deliver": edges.desired_deliver_prefix(cluster),
            },
        },
    }


async def connect_hub_as_client(
    urls: Sequence[str], *, cluster: str, credentials: str
) -> NatsClient:
    """Connect a `client` cluster to the hub with its user's `.creds` text: to the first of
    the hub's `urls` while it answers, to the next ones in order when it does not."""
    return await connect(
        list(urls),
        name=f"fleetbus-edge-{cluster}",
        credentials=credentials,
        inbox_prefix=edges.inbox_prefix(cluster),
        in_order=True,
    )


async def connect_local(url: str, *, cluster: str, user: str, password: str) -> NatsClient:
    """Connect to the edge's own nats-server."""
    return await connect(
        url,
        name=f"fleetbus-edge-{cluster}",
        user=user,
        password=password,
        inbox_prefix=edges.inbox_prefix(cluster),
    )


@dataclass(frozen=True)
class KeyFetchSettings:
    """How hard an edge tries to get a data key before it lets the message come back later.

    A fetch asks up to `attempts` times, each answer awaited `reply_within` seconds, with
    jittered exponential pauses (from `pause` up to `pause_max`) between: at most about 20 s,
    during which the message is reported in progress (the durable's `ack_wait` is 10 s).
    Each answer is awaited as long as a single request used to be (5 s): a key service that
    is slow, not gone, still answers every request it received, so a shorter wait only adds
    retries to its queue. When every attempt fails, the message is NAKed with a delay growing
    with its delivery count (`redeliver_base` doubling up to `redeliver_max`), and for
    `redeliver_base` seconds other messages needing a key are NAKed at once rather than asking
    a hub that just failed to answer."""

    reply_within: float = 5.0
    attempts: int = 3
    pause: float = 0.5
    pause_max: float = 2.0
    redeliver_base: float = 1.0
    redeliver_max: float = 15.0

    def redelivery_delay(self, delivered: int) -> float:
        """The NAK delay for a message delivered `delivered` times (1 on its first delivery)."""
        return float(min(self.redeliver_base * 2 ** max(0, delivered - 1), self.redeliver_max))


class EdgeKeys:
    """Opens the ClusterTasks the hub sealed for this cluster (`access.key_service`).

    A key id the edge does not hold is asked from the hub on `fleet.keys.<cluster>`, over the
    cluster's own authenticated link; a key once received is kept (in memory only) and never
    asked for again. A hub that does not answer after bounded retries raises `KeysUnreachable`:
    the durable feed NAKs the message with a delay, so it comes again soon and nothing behind
    it waits; the mirror feed starts again from the last message per subject. A refusal (a
    shredded key, a key of another cluster) skips the message with an error naming the key."""

    def __init__(
        self,
        nc: NatsClient,
        cluster: str,
        *,
        settings: KeyFetchSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nc = nc
        self.cluster = cluster
        self.cache = KeyCache(cluster_scope(cluster))
        self.settings = settings or KeyFetchSettings()
        self.clock = clock
        self.requests = 0
        """Key requests sent to the hub (each retry counts)."""
        self._quiet_until = 0.0

    async def decode(self, msg: Msg) -> ClusterTask | None:
        """The ClusterTask in `msg`; None when it cannot be opened or decoded (logged).
        Raises `KeysUnreachable` when its key is needed and the hub does not hand it over."""
        data = bytes(msg.data)
        if is_sealed_bytes(data):
            try:
                key_id = key_id_of_bytes(data)
                if scope_of_key(key_id) != self.cache.scope:
                    raise KeyUnavailable(
                        key_id,
                        f"it is not a key of cluster {self.cluster}, and an edge opens only "
                        "its own cluster's desired state",
                    )
                if key_id not in self.cache:
                    await self._fetch(key_id)
                data = open_bytes(
                    self.cache, data, msg.subject.encode(), f"desired state {msg.subject}"
                )
            except SealingError as e:
                log.error("cannot open the desired state on %s: %s", msg.subject, e)
                return None
        try:
            return decode_cluster_task(data)
        except CorruptPayload as e:
            log.warning("undecodable ClusterTask on %s: %s", msg.subject, e)
            return None

    async def _fetch(self, key_id: str) -> None:
        settings = self.settings
        wait = self._quiet_until - self.clock()
        if wait > 0:
            raise KeysUnreachable(
                f"the hub's key service did not hand over data key {key_id} a moment ago; "
                f"asking again in {wait:.1f}s"
            )
        try:
            reply = await self._ask(key_id)
        except KeysUnreachable:
            self._quiet_until = self.clock() + settings.redeliver_base
            raise
        try:
            answer = orjson.loads(reply.data)
        except orjson.JSONDecodeError as e:
            raise KeyUnavailable(key_id, "the hub's answer is not JSON") from e
        if not isinstance(answer, dict) or "key" not in answer:
            reason = answer.get("error") if isinstance(answer, dict) else None
            raise KeyUnavailable(key_id, f"the hub refused it: {reason or 'no reason given'}")
        try:
            key = base64.b64decode(str(answer["key"]), validate=True)
        except ValueError as e:
            raise KeyUnavailable(key_id, "the hub's answer holds no base64 key") from e
        self.cache.add(key_id, key)

    async def _ask(self, key_id: str) -> Msg:
        """The key service's answer for `key_id`, asked up to `attempts` times.

        Every attempt is sent with one reply inbox, kept open until an answer comes: a busy
        service answers the requests it received late, and the late answer to an earlier
        attempt is as good as one to the latest (with a new inbox per attempt it would be
        thrown away, and each attempt would have to wait in the service's queue again)."""
        settings = self.settings
        subject = subjects.keys_subject(self.cluster)
        answers: asyncio.Queue[Msg] = asyncio.Queue()

        async def receive(msg: Msg) -> None:
            answers.put_nowait(msg)

        inbox = self.nc.new_inbox()
        try:
            sub = await self.nc.subscribe(inbox, cb=receive)
        except nats.errors.Error as e:
            raise KeysUnreachable(f"cannot ask the hub for data key {key_id}: {e}") from e
        trouble = "no answer"
        try:
            for attempt in range(settings.attempts):
                if attempt:
                    pause = min(settings.pause * 2 ** (attempt - 1), settings.pause_max)
                    answer = await _next_answer(answers, pause + random.uniform(0, settings.pause))
                    if answer is not None and status_of(answer) is None:
                        return answer
                self.requests += 1
                try:
                    await self.nc.publish(subject, key_id.encode(), reply=inbox)
                except nats.errors.Error as e:
                    trouble = f"cannot send: {e}"
                    continue
                answer = await _next_answer(answers, settings.reply_within)
                while answer is not None and status_of(answer) not in (None, NO_RESPONDERS):
                    answer = await _next_answer(answers, settings.reply_within)
                if answer is None:
                    trouble = f"no answer within {settings.reply_within:g}s"
                elif status_of(answer) == NO_RESPONDERS:
                    trouble = "no key service is listening"
                else:
                    return answer
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        raise KeysUnreachable(
            f"the hub's key service did not hand over data key {key_id} "
            f"({settings.attempts} attempts; last: {trouble})"
        )


NO_RESPONDERS = "503"


async def _next_answer(answers: asyncio.Queue[Msg], within: float) -> Msg | None:
    try:
        return await asyncio.wait_for(answers.get(), within)
    except TimeoutError:
        return None


def _position(msg: Msg) -> dict[str, int]:
    """The message's stream sequence and what its consumer still had behind it."""
    try:
        metadata = msg.metadata
    except (nats.errors.Error, nats.js.errors.Error, ValueError, IndexError):
        return {}
    return {"seq": int(metadata.sequence.stream), "pending": int(metadata.num_pending)}


async def _no_ack() -> None:
    return None


class MirrorFeed:
    """The cluster's desired state from the leaf's local mirror stream."""

    def __init__(
        self, nc: NatsClient, cluster: str, *, key_settings: KeyFetchSettings | None = None
    ) -> None:
        self.nc = nc
        self.cluster = cluster
        self.keys = EdgeKeys(nc, cluster, settings=key_settings)

    async def deliveries(self) -> AsyncIterator[Delivery]:
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_message(msg: Msg) -> None:
            await queue.put(msg)

        js = self.nc.jetstream()
        config = js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.LAST_PER_SUBJECT)
        try:
            sub = await js.subscribe(
                subjects.desired_filter(self.cluster),
                stream=edges.mirror_stream(self.cluster),
                ordered_consumer=True,
                config=config,
                cb=on_message,
                idle_heartbeat=2.0,
            )
        except (nats.errors.Error, nats.js.errors.Error) as e:
            raise EdgeUnavailable(f"cannot read {edges.mirror_stream(self.cluster)}: {e}") from e
        try:
            while True:
                msg = await queue.get()
                task = await self.keys.decode(msg)
                yield Delivery(subject=msg.subject, task=task, ack=_no_ack, **_position(msg))
        finally:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                await sub.unsubscribe()


class DurableFeed:
    """The cluster's desired state pulled from its durable consumer on the hub.

    A ClusterTask reaches it one network round trip after it is stored. An idle cluster costs
    the hub one pull request a minute and a heartbeat every 5 s (2,000 small messages a second
    for 10,000 idle clusters); a request lost with a restarting hub, or with the node holding
    the durable (the hub creates it again on a node that is up), is noticed within 11 s and
    sent again."""

    def __init__(
        self,
        nc: NatsClient,
        cluster: str,
        *,
        hub_domain: str = HUB_DOMAIN,
        settings: PullSettings | None = None,
        key_settings: KeyFetchSettings | None = None,
    ) -> None:
        self.nc = nc
        self.cluster = cluster
        self.hub_domain = hub_domain
        self.settings = settings or PullSettings(
            batch=100, expires=60.0, heartbeat=DURABLE_HEARTBEAT_S
        )
        self.keys = EdgeKeys(nc, cluster, settings=key_settings)
        self.held_back = 0
        """Messages NAKed because their data key could not be fetched (they come again)."""

    async def deliveries(self) -> AsyncIterator[Delivery]:
        pull = ContinuousPull(
            self.nc,
            api_prefix=f"$JS.{self.hub_domain}.API",
            stream=DESIRED_STREAM,
            durable=edges.desired_durable(self.cluster),
            settings=self.settings,
        )
        try:
            async for msgs in pull.batches():
                for msg in msgs:
                    try:
                        task = await self._decode_in_progress(msg)
                    except KeysUnreachable as e:
                        await self._redeliver_later(msg, e)
                        continue
                    yield Delivery(
                        subject=msg.subject, task=task, ack=_acker(msg), **_position(msg)
                    )
        except EventLogUnavailable as e:
            raise EdgeUnavailable(f"cannot pull the desired state of {self.cluster}: {e}") from e

    async def _decode_in_progress(self, msg: Msg) -> ClusterTask | None:
        """Decode `msg`, telling the hub every `IN_PROGRESS_EVERY_S` that it is being worked
        on while its data key is fetched: a fetch may take longer than the durable's short
        `ack_wait`, which is short so that a message lost on its way (the edge's server went
        down as it was delivered) comes again within seconds."""
        decoding = asyncio.ensure_future(self.keys.decode(msg))
        try:
            while True:
                done, _ = await asyncio.wait({decoding}, timeout=IN_PROGRESS_EVERY_S)
                if done:
                    return decoding.result()
                with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
                    await msg.in_progress()
        finally:
            await cancel_and_wait([decoding])

    async def _redeliver_later(self, msg: Msg, why: KeysUnreachable) -> None:
        """NAK `msg` with a delay: the consumer delivers it again then, and the messages
        behind it flow meanwhile. (Left unacknowledged it would come back only after the
        consumer's whole `ack_wait`.)"""
        try:
            delivered = int(msg.metadata.num_delivered)
        except (nats.errors.Error, nats.js.errors.Error, ValueError, IndexError):
            delivered = 1
        delay = self.keys.settings.redelivery_delay(delivered)
        self.held_back += 1
        log.warning(
            "desired state on %s held back (delivery %d): %s; it comes again in %.1fs",
            msg.subject,
            delivered,
            why,
            delay,
        )
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
            await msg.nak(delay=delay)


def _acker(msg: Msg) -> Any:
    async def ack() -> None:
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
            await msg.ack()

    return ack


class OutboxSink:
    """Appends report events to the cluster's outbox (idempotent: `Nats-Msg-Id` = event id)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def append(self, event: Report) -> None:
        await self.store.append([event])


class InventoryPublisher:
    """Sends inventory digests on `fleet.inventory.<cluster>` (core NATS: not stored)."""

    def __init__(self, nc: NatsClient, cluster: str) -> None:
        self.nc = nc
        self.subject = subjects.inventory_subject(cluster)

    async def publish(self, inventory: InventoryDigest) -> None:
        try:
            await self.nc.publish(self.subject, encode_inventory(inventory))
        except nats.errors.Error as e:
            raise EdgeUnavailable(f"cannot send inventory digest: {e}") from e


MIRROR_POSITIONS_EVERY_S = 15.0
"""How often a leaf edge asks its mirror's stream info while nothing suggests a change."""


class LeafHubLink:
    """The leaf's link to the hub, seen from the edge: the leaf's `/leafz` (its monitoring port,
    loopback only) says whether it is connected; the mirror's stream info says how far behind
    the hub's desired state it is.

    Readiness asks every second, so each ask is kept cheap for both processes: `/leafz` goes
    over one kept-alive HTTP connection (opened again only when the leaf closed it), and the
    mirror's stream info is asked only when something may have changed it: the link came up
    or moved, the connector read something since (`progress`, its delivered sequence and
    pending count), the last answer said the mirror or the connector was behind, or
    `positions_every` seconds passed since the last answer."""

    def __init__(
        self,
        nc: NatsClient,
        cluster: str,
        *,
        monitor_port: int,
        mirror_positions: bool = True,
        timeout: float = 2.0,
        progress: Callable[[], tuple[int, int]] | None = None,
        positions_every: float = MIRROR_POSITIONS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nc = nc
        self.cluster = cluster
        self.monitor_port = monitor_port
        self.mirror_positions = mirror_positions
        """False when the connector reads the hub's durable consumer instead of the mirror:
        then the mirror's sequences say nothing about what the connector has read."""
        self.timeout = timeout
        self.progress = progress
        """The connector's (delivered stream sequence, messages pending behind it); None:
        not known, the stream info is asked on every check."""
        self.positions_every = positions_every
        self.clock = clock
        self.stream_info_asked = 0
        """Stream info requests sent so far."""
        self._monitor_link: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._monitor_lock = asyncio.Lock()
        """One request at a time on the kept connection (readiness, probes and metrics ask)."""
        self._positions: HubLinkState | None = None
        self._positions_key: tuple[str, tuple[int, int] | None] | None = None
        self._positions_at = 0.0

    async def state(self) -> HubLinkState:
        try:
            async with self._monitor_lock:
                try:
                    leafz = await asyncio.wait_for(self._monitor("/leafz"), self.timeout)
                except BaseException:
                    # Whatever came halfway (a timeout, a cancellation) would be read as the
                    # next answer: that connection is done.
                    await self._drop_monitor_link()
                    raise
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as e:
            self._positions = None
            return HubLinkState(
                connected=False, detail=f"the leaf nats-server does not answer: {e}"
            )
        links = leafz.get("leafs") or []
        if not links:
            self._positions = None
            return HubLinkState(connected=False, detail="the leaf has no link to the hub")
        first = links[0]
        detail = f"{first.get('ip', '?')}:{first.get('port', '?')}"
        if not self.mirror_positions:
            return HubLinkState(connected=True, detail=detail)
        key = (detail, self.progress() if self.progress is not None else None)
        now = self.clock()
        cached = self._positions
        if (
            cached is not None
            and key[1] is not None
            and key == self._positions_key
            and now - self._positions_at < self.positions_every
            and cached.mirror_lag == 0
            and key[1][0] >= cached.mirror_last_seq
            and key[1][1] == 0
        ):
            return cached
        positions = await self._mirror_positions(detail)
        self._positions, self._positions_key, self._positions_at = positions, key, now
        return positions

    async def _mirror_positions(self, detail: str) -> HubLinkState:
        self.stream_info_asked += 1
        try:
            info = await self.nc.jetstream().stream_info(edges.mirror_stream(self.cluster))
        except (nats.errors.Error, nats.js.errors.Error) as e:
            return HubLinkState(
                connected=True, detail=f"{detail}; mirror unreadable: {e}", mirror_lag=1
            )
        mirror = info.mirror
        return HubLinkState(
            connected=True,
            detail=detail,
            mirror_last_seq=int(info.state.last_seq),
            mirror_lag=int(mirror.lag or 0) if mirror is not None else 0,
        )

    async def close(self) -> None:
        await self._drop_monitor_link()

    async def _drop_monitor_link(self) -> None:
        link, self._monitor_link = self._monitor_link, None
        if link is not None:
            link[1].close()
            with contextlib.suppress(OSError):
                await link[1].wait_closed()

    async def _monitor(self, path: str) -> dict[str, Any]:
        """GET `path` from the leaf's monitoring port over the kept connection; a connection
        the leaf closed meanwhile is opened again once."""
        for attempt in (1, 2):
            fresh = self._monitor_link is None
            if self._monitor_link is None:
                self._monitor_link = await asyncio.open_connection("127.0.0.1", self.monitor_port)
            reader, writer = self._monitor_link
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                await writer.drain()
                status_line, headers = await _read_head(reader)
            except (OSError, asyncio.IncompleteReadError):
                await self._drop_monitor_link()
                if fresh or attempt == 2:
                    raise
                continue
            body = await _read_body(reader, headers)
            if body is None:  # no length given: the body ends with the connection
                body = await reader.read()
                await self._drop_monitor_link()
            elif headers.get("connection", "").lower() == "close":
                await self._drop_monitor_link()
            if status_line.split()[1:2] != ["200"]:
                raise ValueError(f"{path} answered {status_line!r}")
            answer = orjson.loads(body)
            if not isinstance(answer, dict):
                raise ValueError(f"{path} answered no object")
            return answer
        raise ValueError(f"{path}: no answer")  # not reached: the second attempt raises


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes | None:
    """The body of an HTTP/1.1 answer; None when it ends with the connection (no length)."""
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return None


class ClientHubLink:
    """The link of a cluster connected to the hub as a plain client: its own connection."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc

    async def state(self) -> HubLinkState:
        if self.nc.is_connected:
            return HubLinkState(
                connected=True,
                detail=str(self.nc.connected_url.netloc if self.nc.connected_url else "hub"),
            )
        return HubLinkState(connected=False, detail="the connection to the hub is down")
