"""Subscriptions and their secrets in the hub's data dir (`notifications.json`, mode 0600).

Webhook URLs (a Slack URL is itself a credential) and HMAC keys are secrets: they live in this
file only, written whole or not at all, readable by the hub's user alone, and never leave the
hub except in the requests it signs.
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime
from pathlib import Path

import msgspec

from notify.errors import InvalidSubscription, SubscriptionExists, UnknownSubscription
from notify.model import (
    Filters,
    Sink,
    Subscription,
    SubscriptionSecrets,
    check_filters,
    check_subscription_name,
    check_url,
    endpoint_of,
)

FILE_NAME = "notifications.json"
MIN_KEY_LENGTH = 16


class _Entry(msgspec.Struct, frozen=True, kw_only=True):
    subscription: Subscription
    secrets: SubscriptionSecrets


class _File(msgspec.Struct, kw_only=True):
    subscriptions: list[_Entry] = msgspec.field(default_factory=list)


def new_hmac_key() -> str:
    return secrets.token_urlsafe(32)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class SubscriptionStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, _Entry] = {}
        if path.exists():
            for entry in msgspec.json.decode(path.read_bytes(), type=_File).subscriptions:
                self._entries[entry.subscription.name] = entry

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(
            self.path, msgspec.json.encode(_File(subscriptions=[*self._entries.values()]))
        )

    def all(self) -> list[Subscription]:
        return sorted((e.subscription for e in self._entries.values()), key=lambda s: s.name)

    def get(self, name: str) -> tuple[Subscription, SubscriptionSecrets]:
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownSubscription(name)
        return entry.subscription, entry.secrets

    @staticmethod
    def prepare(
        *,
        name: str,
        sink: Sink,
        url: str,
        filters: Filters,
        hmac_key: str,
        created_by: str,
        now: datetime,
    ) -> tuple[Subscription, SubscriptionSecrets]:
        """A checked subscription; nothing is stored yet."""
        check_subscription_name(name)
        check_url(url)
        check_filters(filters)
        if len(hmac_key) < MIN_KEY_LENGTH:
            raise InvalidSubscription(
                "hmac_key", f"shorter than {MIN_KEY_LENGTH} characters (leave it out to get one)"
            )
        subscription = Subscription(
            name=name,
            sink=sink,
            endpoint=endpoint_of(url),
            filters=filters,
            created_at=now,
            created_by=created_by,
        )
        return subscription, SubscriptionSecrets(url=url, hmac_key=hmac_key)

    def check_new(self, name: str) -> None:
        if name in self._entries:
            raise SubscriptionExists(name)

    def add(self, subscription: Subscription, secrets_: SubscriptionSecrets) -> None:
        self.check_new(subscription.name)
        self._entries[subscription.name] = _Entry(subscription=subscription, secrets=secrets_)
        self._save()

    def remove(self, name: str) -> Subscription:
        entry = self._entries.pop(name, None)
        if entry is None:
            raise UnknownSubscription(name)
        self._save()
        return entry.subscription
