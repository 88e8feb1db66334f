"""What the notification component refuses."""

from __future__ import annotations

from taskset.errors import FleetbusError


class NotifyError(FleetbusError):
    """A refused notification command or an unusable subscription."""


class InvalidSubscription(NotifyError):
    """A subscription that cannot be kept as given; names the field and the rule."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"subscription {field}: {reason}")


class UnknownSubscription(NotifyError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no notification subscription named {name!r}")


class SubscriptionExists(NotifyError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"a notification subscription named {name!r} exists already; remove it first"
        )
