"""The hub's consumer gate: the only way an edge gets a consumer on DESIRED.

Edges' mirrors send their JetStream API requests to `fleet.jsapi.<cluster>.…` (a cluster's
certificate may publish there and nowhere else in the API). The gate answers them: it decides
with `access.consumer_rules.decide_request`, forwards what is allowed to the hub's JetStream API
with the hub's own credentials and relays the answer, and refuses the rest with a JetStream
error naming the rule. It remembers which consumers it created for whom, so a removed cluster's
consumers are deleted at once (`forget`), and so deletes and the per-cluster limit can be
checked.

This module speaks NATS (like `access.leafnodes`), on a connection of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from pathlib import Path

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from access.consumer_rules import Forward, Refuse, decide_request, refusal_reply
from events import edges
from events.store import connect
from events.streams import DESIRED_STREAM

log = logging.getLogger(__name__)

FORWARD_TIMEOUT_S = 5.0
NOT_FOUND_ERR_CODE = 10014


class ConsumerGate:
    """Serves `fleet.jsapi.*.>` for the edges' mirrors (see `access.consumer_rules`)."""

    def __init__(
        self,
        *,
        url: str | list[str],
        credentials: Path,
        registered: Callable[[], Collection[str]],
    ) -> None:
        self.url = url
        self.credentials = credentials
        self.registered = registered
        self.created: dict[str, set[str]] = {}
        """Consumers the gate created, per cluster, that may still exist."""
        self.refusals = 0
        self._nc: NatsClient | None = None
        self._lock = asyncio.Lock()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        nc = await connect(self.url, name="fleetbus-consumer-gate", credentials=self.credentials)
        self._nc = nc
        try:
            await nc.subscribe(f"{edges.GATE_PREFIX}.*.>", cb=self._serve)
            await nc.flush()
            if ready is not None:
                ready.set()
            await asyncio.Event().wait()
        finally:
            self._nc = None
            await nc.close()

    async def forget(self, clusters: Collection[str]) -> None:
        """Delete every consumer the gate created for `clusters` (removed or re-certified)."""
        nc = self._nc
        for cluster in clusters:
            names = self.created.pop(cluster, set())
            if nc is None:
                continue
            for name in sorted(names):
                await self._delete(nc, name)
                log.info("deleted consumer %s of cluster %s", name, cluster)

    async def _serve(self, msg: Msg) -> None:
        nc = self._nc
        if nc is None or not msg.reply:
            return
        cluster, _, api = msg.subject.removeprefix(f"{edges.GATE_PREFIX}.").partition(".")
        try:
            decoded = orjson.loads(msg.data) if msg.data else None
        except orjson.JSONDecodeError:
            decoded = None
        body = decoded if isinstance(decoded, dict) else None
        async with self._lock:
            live = await self._live(nc, cluster)
            verdict = decide_request(
                cluster, api, body, live=live, registered=cluster in self.registered()
            )
            if isinstance(verdict, Refuse):
                self.refusals += 1
                log.warning("refused %s from cluster %s: %s", api, cluster, verdict.reason)
                await nc.publish(msg.reply, orjson.dumps(refusal_reply(verdict.reason)))
                return
            answer = await self._forward(nc, verdict, msg.data)
            if answer is None:
                return  # no answer from JetStream: the mirror retries
            if verdict.creates:
                # The server may suffix a direct consumer's name: record the one it answers with.
                created = _created_name(answer)
                if created is not None:
                    self.created.setdefault(cluster, set()).add(created)
            else:
                self.created.get(cluster, set()).discard(verdict.consumer)
        await nc.publish(msg.reply, answer)

    async def _forward(self, nc: NatsClient, verdict: Forward, data: bytes) -> bytes | None:
        try:
            reply = await nc.request(verdict.api_subject, data, timeout=FORWARD_TIMEOUT_S)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
            log.warning("JetStream did not answer %s: %s", verdict.api_subject, e)
            return None
        return bytes(reply.data)

    async def _live(self, nc: NatsClient, cluster: str) -> set[str]:
        """The cluster's consumers that still exist (mirror consumers expire when idle)."""
        names = self.created.get(cluster, set())
        for name in sorted(names):
            try:
                reply = await nc.request(
                    f"$JS.API.CONSUMER.INFO.{DESIRED_STREAM}.{name}", b"", timeout=FORWARD_TIMEOUT_S
                )
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                continue  # unknown: counted as live
            error = orjson.loads(reply.data).get("error")
            if isinstance(error, dict) and error.get("err_code") == NOT_FOUND_ERR_CODE:
                names.discard(name)
        return set(names)

    async def _delete(self, nc: NatsClient, name: str) -> None:
        try:
            await nc.request(
                f"$JS.API.CONSUMER.DELETE.{DESIRED_STREAM}.{name}", b"", timeout=FORWARD_TIMEOUT_S
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
            log.warning("could not delete consumer %s: %s", name, e)


def _created_name(answer: bytes) -> str | None:
    try:
        decoded = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(decoded, dict) or "error" in decoded:
        return None
    name = decoded.get("name")
    return name if isinstance(name, str) else None
