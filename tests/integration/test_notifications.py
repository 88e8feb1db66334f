"""Notifications against a receiver on loopback, on a real nats-server.

The receiver is a plain HTTP server the test starts (and stops, to be "down for a while") on a
fixed loopback port. Events go into the real EVENTS and REPORTS streams; the notifier reads them
through its durable consumers, so a notifier stopped and started again (a hub restart) delivers
what was appended meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from events.catalog import (
    DriftDetected,
    Event,
    RolloutHalted,
    TaskApplied,
    TaskFailed,
    TasksetRetired,
)
from events.ids import new_event_id
from events.store import EventStore
from events.streams import REPORTS_STREAM
from events.tasks import cancel_and_wait
from fleetbus.natsserver import free_port
from notify.errors import InvalidSubscription, SubscriptionExists, UnknownSubscription
from notify.model import Filters
from notify.render import SIGNATURE_HEADER, TIMESTAMP_HEADER
from notify.service import Backoff, Notifier
from notify.store import FILE_NAME, SubscriptionStore
from tests.eventually import eventually

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
SECRET_PATH = "/hooks/T000/B000/very-secret-path"


def stamp() -> dict[str, Any]:
    return {"id": new_event_id(), "occurred_at": NOW, "actor": "test"}


def failed(cluster: str, taskset: str = "web") -> TaskFailed:
    return TaskFailed(**stamp(), cluster=cluster, taskset=taskset, taskset_version=1, reason="boom")


def applied(cluster: str, taskset: str = "web") -> TaskApplied:
    return TaskApplied(**stamp(), cluster=cluster, taskset=taskset, taskset_version=1)


class Receiver:
    """An HTTP server on a fixed loopback port that records what it is sent."""

    def __init__(self, port: int, status: int = 200) -> None:
        self.port = port
        self.status = status
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.paths: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SECRET_PATH}"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.status < 300:
                    receiver.received.append((dict(self.headers.items()), body))
                    receiver.paths.append(self.path)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> list[str]:
        return [json.loads(body)["id"] for _, body in self.received]

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(free_port())
    r.up()
    try:
        yield r
    finally:
        r.down()


class Running:
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(notifier.run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout=60)
        finally:
            await cancel_and_wait([self.task])


@pytest.fixture
async def notifier(
    event_store: EventStore, tmp_path: Path
) -> AsyncIterator[tuple[Notifier, Running]]:
    made = Notifier(
        event_store,
        event_store.on_stream(REPORTS_STREAM),
        SubscriptionStore(tmp_path / FILE_NAME),
        backoff=Backoff(base=0.2, cap=1.0),
        timeout=2.0,
    )
    running = Running(made)
    try:
        yield made, running
    finally:
        await running.close()


def verify(key: str, headers: dict[str, str], body: bytes) -> bool:
    timestamp = headers[TIMESTAMP_HEADER]
    mac = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers[SIGNATURE_HEADER], f"sha256={mac}")


async def test_a_receiver_down_for_a_while_gets_exactly_the_subscribed_events_later(
    event_store: EventStore,
    notifier: tuple[Notifier, Running],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    made, running = notifier
    reports = event_store.on_stream(REPORTS_STREAM)
    subscription, key = await made.add(
        name="oncall",
        sink="json",
        url=receiver.url,
        filters=Filters(clusters=["c1"], min_severity="warning"),
        hmac_key=None,
        created_by="user:test",
    )
    assert subscription.endpoint == f"http://127.0.0.1:{receiver.port}"

    first = failed("c1")
    await reports.append([applied("c1")])  # info: below the subscription's severity
    await reports.append([failed("c2")])  # another cluster
    await reports.append([first])
    await eventually(lambda: receiver.ids() == [first.id], within=20)

    receiver.down()
    while_down: list[Event] = [
        DriftDetected(**stamp(), cluster="c1", taskset="web", object="v1/ConfigMap/web/x"),
        RolloutHalted(**stamp(), taskset="web", taskset_version=2, wave=1, failed=["c1", "c3"]),
        failed("c1", "db"),
    ]
    await reports.append([while_down[0]])
    await event_store.append([while_down[1]])
    await reports.append([while_down[2]])
    await event_store.append([TasksetRetired(**stamp(), taskset="web")])  # info, names no cluster

    async def failing() -> bool:
        [status] = await made.status()
        return status.state.consecutive_failures >= 2 and status.health == "failing"

    await eventually(failing, within=20)
    [status] = await made.status()
    assert status.pending >= 3
    assert "ConnectError" in status.state.last_error
    assert SECRET_PATH not in status.state.last_error

    # The hub restarts while the receiver is still down: nothing is lost.
    await running.close()
    restarted = Notifier(
        event_store,
        reports,
        SubscriptionStore(tmp_path / FILE_NAME),
        backoff=Backoff(base=0.2, cap=1.0),
        timeout=2.0,
    )
    again = Running(restarted)
    try:
        await reports.append([failed("c1", "cache")])
        receiver.up()
        expected = {first.id, *(e.id for e in while_down)}
        await eventually(lambda: len(receiver.ids()) >= 5, within=30)
        await asyncio.sleep(1.0)  # nothing else arrives
        ids = receiver.ids()
        assert len(ids) == len(set(ids)) == 5
        assert expected <= set(ids)
        bodies = receiver.bodies()
        assert [b["event"]["taskset"] for b in bodies if b["type"] == "TaskFailed"] == [
            "web",
            "db",
            "cache",
        ], "one stream's events arrive in order"
        for headers, body in receiver.received:
            assert verify(key, headers, body)
            assert not verify("another-key-of-enough-length", headers, body)
        assert set(receiver.paths) == {SECRET_PATH}
        [status] = await restarted.status()
        assert status.health == "ok"
        assert status.state.delivered == 4
        await eventually(lambda: pending_is_zero(restarted), within=60)
    finally:
        await again.close()


async def pending_is_zero(notifier: Notifier) -> bool:
    [status] = await notifier.status()
    return status.pending == 0


async def test_sinks_render_cloudevents_and_slack_and_never_send_secrets(
    event_store: EventStore, notifier: tuple[Notifier, Running], receiver: Receiver
) -> None:
    made, _ = notifier
    await made.add(
        name="ce",
        sink="cloudevents",
        url=receiver.url,
        filters=Filters(event_types=["RolloutHalted"]),
        hmac_key="k" * 32,
        created_by="user:test",
    )
    await made.add(
        name="chat",
        sink="slack",
        url=receiver.url + "?channel=ops",
        filters=Filters(tasksets=["web"], event_types=["RolloutHalted"]),
        hmac_key="s" * 32,
        created_by="user:test",
    )
    halted = RolloutHalted(
        **stamp(), taskset="web", taskset_version=3, wave=2, failed=["c9"], reason="2 failed"
    )
    await event_store.append([halted])
    await eventually(lambda: len(receiver.received) == 2, within=20)
    by_type = {headers["Content-Type"].split(";")[0]: body for headers, body in receiver.received}
    cloud = json.loads(by_type["application/cloudevents+json"])
    assert cloud["specversion"] == "1.0"
    assert cloud["id"] == halted.id
    assert cloud["type"] == "io.fleetbus.RolloutHalted"
    assert cloud["source"] == "/fleetbus/events"
    assert cloud["subject"] == "web"
    assert cloud["data"]["severity"] == "error"
    assert cloud["data"]["clusters"] == ["c9"]
    slack = json.loads(by_type["application/json"])
    assert slack == {"text": "[error] RolloutHalted web v3 on c9: 2 failed"}
    for headers, body in receiver.received:
        key = "k" * 32 if "cloudevents" in headers["Content-Type"] else "s" * 32
        assert verify(key, headers, body)

    listed = made.all()
    assert [s.name for s in listed] == ["ce", "chat"]
    assert all(SECRET_PATH not in repr(s) and "k" * 32 not in repr(s) for s in listed)


async def test_bad_subscriptions_are_refused_and_nothing_is_written(
    notifier: tuple[Notifier, Running], receiver: Receiver, tmp_path: Path
) -> None:
    made, _ = notifier
    bad: list[tuple[dict[str, Any], str]] = [
        ({"url": "ftp://example.test/x"}, "url"),
        ({"url": "http://user:pw@127.0.0.1/x"}, "url"),
        ({"name": "Not_A_Name"}, "name"),
        ({"filters": Filters(event_types=["NoSuchEvent"])}, "event_types"),
        ({"filters": Filters(clusters=["a.b"])}, "clusters"),
        ({"hmac_key": "short"}, "hmac_key"),
    ]
    for change, field in bad:
        arguments: dict[str, Any] = {
            "name": "ok",
            "sink": "json",
            "url": receiver.url,
            "filters": Filters(),
            "hmac_key": None,
            "created_by": "user:test",
            **change,
        }
        with pytest.raises(InvalidSubscription) as refused:
            await made.add(**arguments)
        assert refused.value.field == field
    assert not (tmp_path / FILE_NAME).exists()
    await made.add(
        name="ok",
        sink="json",
        url=receiver.url,
        filters=Filters(),
        hmac_key=None,
        created_by="user:test",
    )
    with pytest.raises(SubscriptionExists):
        await made.add(
            name="ok",
            sink="json",
            url=receiver.url,
            filters=Filters(),
            hmac_key=None,
            created_by="user:test",
        )
    assert (tmp_path / FILE_NAME).stat().st_mode & 0o777 == 0o600
    await made.remove("ok")
    with pytest.raises(UnknownSubscription):
        await made.remove("ok")
    assert made.all() == []
