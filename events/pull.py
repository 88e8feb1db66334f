"""A continuous pull from a durable JetStream consumer: every message handed over as it arrives.

nats-py's `fetch(n)` with a lingering pull request keeps the first message it receives until
the batch of `n` is full or the request expires, so one ClusterTask published to an idle
cluster waited for up to the whole `expires` (20 s) before the connector saw it, and the
scheduler's reads waited up to their fetch timeout. Here one pull request of `batch` messages
is kept outstanding at all times, and what has arrived is handed over at once: batches form
only from messages that are already there, so a busy consumer still reads in bulk and an idle
one reacts in one network round trip.

The request is renewed when its batch is used up or it ends (408 expired, 409 the server gave
up on it). Idle heartbeats prove it is still pending; when they stop (the hub restarted, the
connection was re-established) the request is re-sent, so a lost request costs at most
two heartbeats, not the rest of `expires`.

Heartbeats also stop when they are only late (a hub busy for a few seconds): the request is
then still pending on the server. So a request sent again after a silence goes with a new
reply subject, and the old one is unsubscribed first: the server drops a waiting request
whose reply subject nobody listens to any more, and each consumer keeps one request pending.
Sent again on the same reply subject, the late requests piled up (a dozen per consumer at
10,000 consumers, each with its own heartbeats), and the heartbeats of the pile kept the hub
too busy to answer anything: a silence that feeds itself. A message the server delivered to
an abandoned request is not lost: unacknowledged, it comes again after the consumer's
`ack_wait`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from events.errors import EventLogUnavailable

log = logging.getLogger(__name__)

NANOS = 1_000_000_000
HEARTBEAT_STATUS = "100"
EXPIRED_STATUS = "408"
"""The pending request ran out its time; any other status also ends it: 404 nothing to
deliver, 409 the server ended it (leadership change, consumer deleted, limits), 503 nobody
serves that consumer (not created yet)."""
RETRY_PAUSE_S = 1.0


@dataclass(frozen=True)
class PullSettings:
    batch: int = 100
    """Messages one pull request asks for; also the most handed over at once."""
    expires: float = 30.0
    """Seconds a pull request stays pending on the server."""
    heartbeat: float = 5.0
    """The server's idle heartbeat while the request is pending; twice this without a word
    means the request is gone."""

    def request_body(self) -> bytes:
        return orjson.dumps(
            {
                "batch": self.batch,
                "expires": int(self.expires * NANOS),
                "idle_heartbeat": int(self.heartbeat * NANOS),
            }
        )


def status_of(msg: Msg) -> str | None:
    """The status of a JetStream control message (heartbeat, request ended); None for data."""
    if msg.data or not msg.headers:
        return None
    return msg.headers.get("Status")


class ContinuousPull:
    """Batches of the messages a durable pull consumer delivers, each as soon as it exists."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        api_prefix: str,
        stream: str,
        durable: str,
        settings: PullSettings | None = None,
    ) -> None:
        self.nc = nc
        self.subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.settings = settings or PullSettings()
        self.stream = stream
        self.durable = durable

    async def batches(self) -> AsyncGenerator[list[Msg], None]:
        """Data messages in delivery order, in batches of those already received (never empty).

        Runs until the consumer of the generator stops iterating; control messages are
        consumed here. Fails with `EventLogUnavailable` only if it cannot subscribe at all."""
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def receive(msg: Msg) -> None:
            queue.put_nowait(msg)

        async def listen() -> Subscription:
            return await self.nc.subscribe(
                self.nc.new_inbox(), cb=receive, pending_msgs_limit=0, pending_bytes_limit=0
            )

        try:
            sub = await listen()
        except nats.errors.Error as e:
            raise EventLogUnavailable(f"cannot pull {self.stream}/{self.durable}: {e}") from e
        settings = self.settings
        silence = 2 * settings.heartbeat + 1.0
        last_trouble = ""
        try:
            credit = await self._request(sub.subject)
            while True:
                try:
                    first = await asyncio.wait_for(queue.get(), timeout=silence)
                except TimeoutError:
                    log.debug("pull request on %s/%s went silent; re-sending", *self._names())
                    sub, credit = await self._request_anew(sub, listen)
                    continue
                received = [first]
                while len(received) < settings.batch and not queue.empty():
                    received.append(queue.get_nowait())
                data: list[Msg] = []
                ended = ""
                for msg in received:
                    status = status_of(msg)
                    if status is None:
                        data.append(msg)
                        credit -= 1
                    elif status != HEARTBEAT_STATUS and msg.subject == sub.subject:
                        ended = status  # (an abandoned request's end changes nothing)
                if data:
                    yield data
                if ended and ended != EXPIRED_STATUS:
                    # Said once per new status: a consumer not created yet answers every second.
                    if ended != last_trouble:
                        log.info(
                            "pull request on %s/%s ended with status %s; asking again",
                            *self._names(),
                            ended,
                        )
                    await asyncio.sleep(RETRY_PAUSE_S)
                if data:
                    last_trouble = ""
                elif ended:
                    last_trouble = ended
                if ended or credit <= 0:
                    credit = await self._request(sub.subject)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    def _names(self) -> tuple[str, str]:
        return self.stream, self.durable

    async def _request_anew(
        self, sub: Subscription, listen: Callable[[], Awaitable[Subscription]]
    ) -> tuple[Subscription, int]:
        """After a silence: the old reply subject dropped, the request sent on a new one (the
        subscription now listened to, and the request's credit)."""
        try:
            fresh = await listen()
        except nats.errors.Error as e:
            # Disconnected: keep the old one; the next silence comes back here.
            log.info("pull request on %s/%s not sent (%s)", *self._names(), e)
            return sub, 0
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
        return fresh, await self._request(fresh.subject)

    async def _request(self, inbox: str) -> int:
        """Send one pull request; the number of messages it may bring (0 if it was not sent)."""
        try:
            await self.nc.publish(self.subject, self.settings.request_body(), reply=inbox)
        except nats.errors.Error as e:
            # Disconnected: the silence timeout brings us back here.
            log.info("pull request on %s/%s not sent (%s)", *self._names(), e)
            return 0
        return self.settings.batch
