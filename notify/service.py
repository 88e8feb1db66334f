"""Delivery: every subscription's events to its webhook, retried with backoff until received.

One worker per subscription and stream reads the subscription's durable consumer. An event the
subscription does not want is acknowledged and dropped; one it wants is rendered for the sink,
signed and POSTed. A 2xx answer acknowledges it; anything else (a refused connection, a timeout,
a 5xx or 4xx answer) is counted, kept as the subscription's last error (without the URL, which is
a secret), and the event is offered again after a backoff that doubles from `base` up to `cap`.
Delivery is at least once: a receiver drops repeats by `X-Fleetbus-Event-Id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from events.errors import EventLogError
from events.store import EventStore
from events.tasks import cancel_and_wait
from notify.errors import UnknownSubscription
from notify.jetstream import (
    Pulled,
    consumer_info,
    delete_consumer,
    durable_name,
    ensure_consumer,
    pulled,
)
from notify.model import (
    DeliveryState,
    Filters,
    Sink,
    Subscription,
    SubscriptionSecrets,
    SubscriptionStatus,
)
from notify.render import Notification, request_for
from notify.store import SubscriptionStore, new_hmac_key

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 10.0
MAX_ERROR_LENGTH = 300


@dataclass(frozen=True)
class Backoff:
    base: float = 1.0
    cap: float = 300.0

    def delay(self, attempt: int) -> float:
        """Seconds before attempt `attempt + 1`: base, 2·base, 4·base, ... at most `cap`."""
        return float(min(self.cap, self.base * 2 ** max(0, min(attempt - 1, 30))))


@dataclass
class _Running:
    workers: list[asyncio.Task[None]] = field(default_factory=list)


def describe_failure(error: BaseException | None, status: int | None, url: str) -> str:
    """A failure as a person may read it: the status or the error's kind, never the URL."""
    if status is not None:
        text = f"HTTP {status}"
    else:
        assert error is not None
        message = str(error) or type(error).__name__
        text = f"{type(error).__name__}: {message}"
    for secret in {url, url.split("?", 1)[0]}:
        if secret:
            text = text.replace(secret, "<url>")
    return text[:MAX_ERROR_LENGTH]


class Notifier:
    """The hub's notification service and the commands on its subscriptions."""

    def __init__(
        self,
        events: EventStore,
        reports: EventStore,
        subscriptions: SubscriptionStore,
        *,
        backoff: Backoff | None = None,
        timeout: float = HTTP_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.streams = [events, reports]
        self.subscriptions = subscriptions
        self.backoff = backoff or Backoff()
        self.timeout = timeout
        self.transport = transport
        self.states: dict[str, DeliveryState] = {}
        self._running: dict[str, _Running] = {}
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    # --- commands ------------------------------------------------------------------------

    async def add(
        self,
        *,
        name: str,
        sink: Sink,
        url: str,
        filters: Filters,
        hmac_key: str | None,
        created_by: str,
    ) -> tuple[Subscription, str]:
        """Check, create the consumers, store; the HMAC key (generated unless given) returned."""
        key = hmac_key if hmac_key is not None else new_hmac_key()
        subscription, secrets = SubscriptionStore.prepare(
            name=name,
            sink=sink,
            url=url,
            filters=filters,
            hmac_key=key,
            created_by=created_by,
            now=datetime.now(UTC),
        )
        async with self._lock:
            self.subscriptions.check_new(name)
            for stream in self.streams:
                await ensure_consumer(stream, durable_name(name, stream.stream))
            self.subscriptions.add(subscription, secrets)
            if self._client is not None:
                self._start(subscription.name)
        log.info(
            "notification subscription %s added (%s to %s)",
            name,
            sink,
            subscription.endpoint,
            extra={"subscription": name},
        )
        return subscription, key

    async def remove(self, name: str) -> Subscription:
        async with self._lock:
            self.subscriptions.get(name)
            running = self._running.pop(name, None)
            if running is not None:
                await cancel_and_wait(running.workers)
            for stream in self.streams:
                await delete_consumer(stream, durable_name(name, stream.stream))
            removed = self.subscriptions.remove(name)
            self.states.pop(name, None)
        log.info("notification subscription %s removed", name, extra={"subscription": name})
        return removed

    def all(self) -> list[Subscription]:
        return self.subscriptions.all()

    def delivery_counts(self) -> list[tuple[Subscription, int, int, int]]:
        counts = []
        for subscription in self.subscriptions.all():
            state = self.states.get(subscription.name) or DeliveryState()
            counts.append(
                (
                    subscription,
                    state.delivered,
                    state.failed_attempts,
                    state.consecutive_failures,
                )
            )
        return counts

    async def status(self) -> list[SubscriptionStatus]:
        answer: list[SubscriptionStatus] = []
        for subscription in self.subscriptions.all():
            pending = 0
            for stream in self.streams:
                with contextlib.suppress(EventLogError):
                    info = await consumer_info(
                        stream, durable_name(subscription.name, stream.stream)
                    )
                    if info is not None:
                        pending += int(info.get("num_pending", 0))
                        pending += int(info.get("num_ack_pending", 0))
            state = self.states.get(subscription.name, DeliveryState())
            answer.append(
                SubscriptionStatus(subscription=subscription, state=state, pending=pending)
            )
        return answer

    # --- the service ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver for every subscription until `stop` is set."""
        async with httpx.AsyncClient(
            timeout=self.timeout, follow_redirects=False, transport=self.transport
        ) as client:
            self._client = client
            try:
                async with self._lock:
                    for subscription in self.subscriptions.all():
                        for stream in self.streams:
                            durable = durable_name(subscription.name, stream.stream)
                            if await ensure_consumer(stream, durable):
                                log.warning(
                                    "the consumer %s was missing and was created again: "
                                    "events since it vanished are not delivered",
                                    durable,
                                    extra={"subscription": subscription.name},
                                )
                        self._start(subscription.name)
                await stop.wait()
            finally:
                self._client = None
                workers = [w for r in self._running.values() for w in r.workers]
                self._running.clear()
                await cancel_and_wait(workers)

    def _start(self, name: str) -> None:
        running = self._running.setdefault(name, _Running())
        self.states.setdefault(name, DeliveryState())
        for stream in self.streams:
            running.workers.append(
                asyncio.create_task(self._work(name, stream), name=f"notify-{name}-{stream.stream}")
            )

    async def _work(self, name: str, stream: EventStore) -> None:
        durable = durable_name(name, stream.stream)
        while True:
            try:
                async for message in pulled(stream, durable):
                    await self._handle(name, stream.stream, message)
            except EventLogError as e:
                log.warning("notification consumer %s: %s; trying again", durable, e)
            await asyncio.sleep(1.0)

    async def _handle(self, name: str, stream: str, message: Pulled) -> None:
        try:
            subscription, secrets = self.subscriptions.get(name)
        except UnknownSubscription:
            return  # removed while this message was on its way
        event = message.event
        if event is None or not subscription.filters.matches(event):
            await message.ack()
            return
        state = self.states.setdefault(name, DeliveryState())
        failure = await self._post(subscription, secrets, Notification(event, stream, message.seq))
        if failure is None:
            state.delivered += 1
            state.consecutive_failures = 0
            state.next_attempt_in_s = 0.0
            state.last_delivered_at = datetime.now(UTC)
            await message.ack()
            return
        delay = self.backoff.delay(message.deliveries)
        state.failed_attempts += 1
        state.consecutive_failures += 1
        state.last_error = failure
        state.last_error_at = datetime.now(UTC)
        state.next_attempt_in_s = delay
        log.warning(
            "notification %s of %s %s failed (attempt %d): %s; next attempt in %.1f s",
            name,
            type(event).__name__,
            event.id,
            message.deliveries,
            failure,
            delay,
            extra={"subscription": name, "endpoint": subscription.endpoint},
        )
        await message.retry_in(delay)

    async def _post(
        self, subscription: Subscription, secrets: SubscriptionSecrets, notification: Notification
    ) -> str | None:
        """None when the receiver took it, else what went wrong."""
        client = self._client
        assert client is not None
        request = request_for(subscription.sink, notification, secrets.hmac_key, int(time.time()))
        try:
            response = await client.post(secrets.url, content=request.body, headers=request.headers)
        except httpx.HTTPError as e:
            return describe_failure(e, None, secrets.url)
        if 200 <= response.status_code < 300:
            return None
        return describe_failure(None, response.status_code, secrets.url)
