"""`/api/v1/notifications`: subscriptions to the fleet's events, delivered to webhooks.

Adding one returns its HMAC key once (generated unless given); lists and status show a
subscription's receiver as scheme, host and port only, never the rest of its URL (a Slack
webhook's path is its credential) nor its key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, delete, get, post
from litestar.params import JSONBody, PathParameter

from api.auth import Role, principal_of, requires
from api.context import Hub, Notifications
from api.errors import ServiceUnavailable
from notify.model import (
    MAX_FILTER_ITEMS,
    MAX_URL_LENGTH,
    Filters,
    Severity,
    Sink,
    Subscription,
    SubscriptionStatus,
)


class NewSubscription(msgspec.Struct, frozen=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(max_length=63)]
    sink: Sink = "json"
    """`json` (generic), `cloudevents` (CloudEvents 1.0, structured) or `slack`."""
    url: Annotated[str, msgspec.Meta(max_length=MAX_URL_LENGTH)]
    """The receiver's URL (a secret: never shown again)."""
    hmac_key: Annotated[str, msgspec.Meta(min_length=16, max_length=256)] | None = None
    """The signing key; generated (and returned once) when left out."""
    event_types: Annotated[list[str], msgspec.Meta(max_length=MAX_FILTER_ITEMS)] = []
    tasksets: Annotated[list[str], msgspec.Meta(max_length=MAX_FILTER_ITEMS)] = []
    clusters: Annotated[list[str], msgspec.Meta(max_length=MAX_FILTER_ITEMS)] = []
    min_severity: Severity = "info"


class CreatedSubscription(msgspec.Struct, frozen=True, kw_only=True):
    subscription: Subscription
    hmac_key: str
    """Receivers verify `X-Fleetbus-Signature` with it. Shown only in this answer."""


class StatusEntry(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    sink: Sink
    endpoint: str
    health: str
    """`ok`, or `failing` while the last attempt failed."""
    pending: int
    delivered: int
    failed_attempts: int
    consecutive_failures: int
    last_error: str
    last_error_at: datetime | None
    last_delivered_at: datetime | None
    next_attempt_in_s: float

    @classmethod
    def of(cls, status: SubscriptionStatus) -> StatusEntry:
        state = status.state
        return cls(
            name=status.subscription.name,
            sink=status.subscription.sink,
            endpoint=status.subscription.endpoint,
            health=status.health,
            pending=status.pending,
            delivered=state.delivered,
            failed_attempts=state.failed_attempts,
            consecutive_failures=state.consecutive_failures,
            last_error=state.last_error,
            last_error_at=state.last_error_at,
            last_delivered_at=state.last_delivered_at,
            next_attempt_in_s=state.next_attempt_in_s,
        )


def _notifier(hub: Any) -> Notifications:
    notifier: Notifications | None = hub.notifications
    if notifier is None:
        raise ServiceUnavailable("this hub runs no notification service")
    return notifier


@get(
    "/api/v1/notifications",
    guards=[requires(Role.viewer, org=True)],
    tags=["notifications"],
    summary="List notification subscriptions (receivers by host only, never URLs or keys)",
)
async def list_subscriptions(hub: Hub) -> list[Subscription]:
    return _notifier(hub).all()


@post(
    "/api/v1/notifications",
    guards=[requires(Role.admin, org=True)],
    tags=["notifications"],
    summary="Subscribe a webhook to events; the HMAC key is returned once",
)
async def add_subscription(
    request: Request[Any, Any, Any], hub: Hub, data: JSONBody[NewSubscription]
) -> CreatedSubscription:
    subscription, key = await _notifier(hub).add(
        name=data.name,
        sink=data.sink,
        url=data.url,
        filters=Filters(
            event_types=list(data.event_types),
            tasksets=list(data.tasksets),
            clusters=list(data.clusters),
            min_severity=data.min_severity,
        ),
        hmac_key=data.hmac_key,
        created_by=principal_of(request).actor,
    )
    return CreatedSubscription(subscription=subscription, hmac_key=key)


@delete(
    "/api/v1/notifications/{name:str}",
    guards=[requires(Role.admin, org=True)],
    tags=["notifications"],
    summary="Remove a subscription (its undelivered events are dropped)",
    status_code=200,
)
async def remove_subscription(
    hub: Hub, name: Annotated[str, PathParameter(max_length=63)]
) -> Subscription:
    return await _notifier(hub).remove(name)


@get(
    "/api/v1/notifications/status",
    guards=[requires(Role.viewer, org=True)],
    tags=["notifications"],
    summary="Delivery status of every subscription: pending events, failures, last error",
)
async def subscription_status(hub: Hub) -> list[StatusEntry]:
    return [StatusEntry.of(status) for status in await _notifier(hub).status()]


ROUTES = [list_subscriptions, add_subscription, remove_subscription, subscription_status]
