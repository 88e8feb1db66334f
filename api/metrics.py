"""Prometheus metrics of the hub, all named `fleetbus_*`, served at `/metrics`.

Two sources feed them. A background observer follows the EVENTS and REPORTS streams from the
moment the hub starts and counts what it sees: events by type, drift detected and corrected,
failures, and the apply latencies clusters report (`TaskApplied.duration_s`, and the time from a
version's publication to each cluster applying it). Counters therefore start at zero with the
process, as Prometheus expects of counters; `rate()` and `increase()` handle the restart.

Everything that is a level rather than a flow (stream positions, consumer lag, clusters
registered and connected, rollout progress) is read fresh at scrape time, from JetStream and from
the projector's read models, so it is right even just after a restart.

Each hub builds its own `CollectorRegistry`: two apps in one process (tests) never collide.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.log_readers import closing
from events.catalog import (
    DriftCorrected,
    DriftDetected,
    TaskApplied,
    TaskFailed,
    TasksetPublished,
)
from events.errors import EventLogError
from events.store import EventStore, StoredEvent
from events.tasks import cancel_and_wait
from notify.model import Subscription

log = logging.getLogger(__name__)

APPLY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HubMetrics:
    """The hub's metric families, and the bookkeeping that turns events into observations."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_appended = Counter(
            "fleetbus_events_appended",
            "Events appended to the log since the hub started, by stream and event type",
            ["stream", "type"],
            registry=r,
        )
        self.stream_last_sequence = Gauge(
            "fleetbus_stream_last_sequence",
            "Sequence of the newest message in each hub stream (grows with every append)",
            ["stream"],
            registry=r,
        )
        self.stream_messages = Gauge(
            "fleetbus_stream_messages",
            "Messages held by each hub stream",
            ["stream"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "fleetbus_consumer_lag",
            "Messages a durable consumer has not yet received, by stream and consumer",
            ["stream", "consumer"],
            registry=r,
        )
        self.consumer_ack_pending = Gauge(
            "fleetbus_consumer_ack_pending",
            "Messages a durable consumer received but has not acknowledged yet",
            ["stream", "consumer"],
            registry=r,
        )
        self.clusters_registered = Gauge(
            "fleetbus_clusters_registered",
            "Clusters registered with the hub",
            registry=r,
        )
        self.clusters_connected = Gauge(
            "fleetbus_clusters_connected",
            "Registered clusters the hub has heard from recently (reports or inventory)",
            registry=r,
        )
        self.clusters_edge_not_ready = Gauge(
            "fleetbus_clusters_edge_not_ready",
            "Registered clusters whose connector said in its last inventory digest that it is "
            "not connected to the hub or not caught up",
            registry=r,
        )
        self.clusters_controller_not_ready = Gauge(
            "fleetbus_clusters_controller_not_ready",
            "Registered clusters whose cluster controller the connector last reported not "
            "ready (not reporting, stopped, standby only, or watches not synced)",
            registry=r,
        )
        self.rollout_progress = Gauge(
            "fleetbus_rollout_progress_ratio",
            "Share of a taskset's target clusters running its newest version (0..1)",
            ["taskset"],
            registry=r,
        )
        self.rollout_clusters = Gauge(
            "fleetbus_rollout_clusters",
            "Target clusters of a taskset by state (applied, pending, failed, drifted)",
            ["taskset", "state"],
            registry=r,
        )
        self.drift_detected = Counter(
            "fleetbus_drift_detected",
            "Drift reports from clusters (an applied object was edited or deleted)",
            ["taskset"],
            registry=r,
        )
        self.drift_corrected = Counter(
            "fleetbus_drift_corrected",
            "Drift corrections reported by clusters",
            ["taskset"],
            registry=r,
        )
        self.tasks_applied = Counter(
            "fleetbus_tasks_applied",
            "ClusterTasks clusters reported as applied",
            ["taskset"],
            registry=r,
        )
        self.tasks_failed = Counter(
            "fleetbus_tasks_failed",
            "ClusterTasks clusters reported as failed",
            ["taskset"],
            registry=r,
        )
        self.apply_duration = Histogram(
            "fleetbus_apply_duration_seconds",
            "How long a cluster took to apply a ClusterTask, as it reported",
            buckets=APPLY_BUCKETS,
            registry=r,
        )
        self.publish_to_applied = Histogram(
            "fleetbus_publish_to_applied_seconds",
            "Time from a taskset version's publication to its first application on a cluster",
            buckets=APPLY_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "fleetbus_http_requests",
            "HTTP requests answered, by method, route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_request_duration = Histogram(
            "fleetbus_http_request_duration_seconds",
            "Time to answer an HTTP request (streams: until the headers were sent)",
            ["route"],
            registry=r,
        )
        self.sse_clients = Gauge(
            "fleetbus_sse_clients",
            "Clients following the live event stream",
            registry=r,
        )
        self._published_at: dict[tuple[str, int], datetime] = {}
        self._first_applied: set[tuple[str, str, int]] = set()

    # --- flows, from the event streams ----------------------------------------------------

    def remember_publication(self, taskset: str, version: int, at: datetime) -> None:
        """Record when a version was published, so its applications can be timed."""
        self._published_at[(taskset, version)] = at
        for key in [k for k in self._published_at if k[0] == taskset and k[1] < version - 1]:
            del self._published_at[key]
        self._first_applied = {
            key for key in self._first_applied if key[1] != taskset or key[2] >= version - 1
        }

    def observe(self, stream: str, stored: StoredEvent) -> None:
        event = stored.event
        self.events_appended.labels(stream=stream, type=event.type_name).inc()
        match event:
            case TasksetPublished():
                self.remember_publication(event.taskset, event.taskset_version, event.occurred_at)
            case TaskApplied(removed=False):
                self.tasks_applied.labels(taskset=event.taskset).inc()
                if event.duration_s > 0:
                    self.apply_duration.observe(event.duration_s)
                key = (event.cluster, event.taskset, event.taskset_version)
                published = self._published_at.get((event.taskset, event.taskset_version))
                if published is not None and key not in self._first_applied:
                    self._first_applied.add(key)
                    latency = (event.occurred_at - published).total_seconds()
                    self.publish_to_applied.observe(max(latency, 0.0))
            case TaskFailed():
                self.tasks_failed.labels(taskset=event.taskset).inc()
            case DriftDetected():
                self.drift_detected.labels(taskset=event.taskset).inc()
            case DriftCorrected():
                self.drift_corrected.labels(taskset=event.taskset).inc()

    # --- levels, at scrape time -----------------------------------------------------------

    async def collect_streams(self, store: EventStore, streams: list[str]) -> None:
        """Stream positions and durable consumer lag, straight from JetStream."""
        for stream in streams:
            info = await store.stream_info(stream)
            state = info.get("state", {})
            self.stream_last_sequence.labels(stream=stream).set(int(state.get("last_seq", 0)))
            self.stream_messages.labels(stream=stream).set(int(state.get("messages", 0)))
        self.consumer_lag.clear()
        self.consumer_ack_pending.clear()
        for stream in streams:
            offset = 0
            while True:
                page = await store.api_request(f"CONSUMER.LIST.{stream}", {"offset": offset})
                consumers = page.get("consumers") or []
                for consumer in consumers:
                    config = consumer.get("config") or {}
                    if not config.get("durable_name"):
                        continue  # ephemeral readers (replays, live streams) are not lag
                    name = str(consumer.get("name"))
                    self.consumer_lag.labels(stream=stream, consumer=name).set(
                        int(consumer.get("num_pending", 0))
                    )
                    self.consumer_ack_pending.labels(stream=stream, consumer=name).set(
                        int(consumer.get("num_ack_pending", 0))
                    )
                offset += len(consumers)
                if not consumers or offset >= int(page.get("total", 0)):
                    break

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


async def observe_streams(
    metrics: HubMetrics,
    sources: list[tuple[str, EventStore]],
) -> None:
    """Follow each stream from its current end and feed what arrives to `metrics`. Runs until
    cancelled; a stream that cannot be read is retried after a pause."""

    async def follow(name: str, store: EventStore) -> None:
        start: int | None = None
        while True:
            try:
                if start is None:
                    start = await store.last_sequence() + 1
                async with closing(store.follow(from_seq=start, skip_undecodable=True)) as stream:
                    async for stored in stream:
                        metrics.observe(name, stored)
                        start = stored.seq + 1
            except EventLogError as e:
                log.warning("metrics cannot follow %s: %s", name, e)
                await asyncio.sleep(2.0)

    tasks = [
        asyncio.create_task(follow(name, store), name=f"metrics-{name}") for name, store in sources
    ]
    try:
        await asyncio.gather(*tasks)
    finally:
        await cancel_and_wait(tasks)


class Notifications(Protocol):
    def delivery_counts(self) -> list[tuple[Subscription, int, int, int]]: ...


class NotificationCollector(Collector):
    """Notification delivery, read from the notifier at scrape time: events delivered and
    failed attempts per subscription (counters since the hub started) and whether the last
    attempt failed. What is still pending is `fleetbus_consumer_lag` and
    `fleetbus_consumer_ack_pending` of the consumers `notify-<name>-events|reports`."""

    def __init__(self, notifier: Notifications) -> None:
        self.notifier = notifier

    def collect(self) -> Iterator[Metric]:
        delivered = CounterMetricFamily(
            "fleetbus_notifications_delivered",
            "Events a receiver accepted, per subscription and sink",
            labels=["subscription", "sink"],
        )
        failed = CounterMetricFamily(
            "fleetbus_notification_failures",
            "Delivery attempts that failed (refused, timed out, non-2xx), per subscription",
            labels=["subscription", "sink"],
        )
        failing = GaugeMetricFamily(
            "fleetbus_notification_consecutive_failures",
            "Failed attempts since the last delivery, per subscription (0: healthy)",
            labels=["subscription", "sink"],
        )
        for subscription, ok, attempts, streak in self.notifier.delivery_counts():
            labels = [subscription.name, subscription.sink]
            delivered.add_metric(labels, ok)
            failed.add_metric(labels, attempts)
            failing.add_metric(labels, streak)
        yield delivered
        yield failed
        yield failing
