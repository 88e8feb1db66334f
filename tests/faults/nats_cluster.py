"""A real 3-node NATS cluster on loopback, from `infra/nats/cluster-node.conf.tmpl`.

Three nats-server processes (`fleetbus.natsserver.NatsServer`), each with its own store, client
port, route port, leafnode port (TLS, certificates from the hub's CA) and monitoring port,
routed to one another, all in JetStream domain `hub`, trusting the operator of a hub data dir
(`fleetbus.hubcluster.cluster_node_config`), so `fleetbus up --nats-url ... --data-dir D` runs
on the cluster as the hub, and edges of that hub can dial any node.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from access.private_files import write_private
from events.connection import connect
from fleetbus.datadir import DataDir
from fleetbus.hubcluster import ClusterNode, cluster_node_config
from fleetbus.natsserver import NatsServer, free_port

CLUSTER_NAME = "fleetbus-hub"


@dataclass
class NatsCluster:
    root: Path
    data: DataDir
    size: int = 3
    nodes: list[NatsServer] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [node.client_url for node in self.nodes]

    leaf_ports: list[int] = field(default_factory=list)

    @property
    def credentials(self) -> Path:
        """The `.creds` of the hub's own user."""
        return self.data.hub_credentials

    @property
    def leaf_urls(self) -> list[str]:
        return [f"tls://127.0.0.1:{port}" for port in self.leaf_ports]

    def render(self) -> None:
        """Write every node's config (ports are picked once: a restarted node keeps them)."""
        self.data.create()
        route_password = secrets.token_urlsafe(16)
        client_ports = [free_port() for _ in range(self.size)]
        route_ports = [free_port() for _ in range(self.size)]
        self.leaf_ports = [free_port() for _ in range(self.size)]
        routes = [f"nats-route://route:{route_password}@127.0.0.1:{port}" for port in route_ports]
        for index in range(self.size):
            name = f"hub-{index + 1}"
            node = ClusterNode(
                server_name=name,
                host="127.0.0.1",
                port=client_ports[index],
                monitor_port=free_port(),
                cluster_port=route_ports[index],
                leaf_port=self.leaf_ports[index],
                leaf_host="127.0.0.1",
                home=self.root / name,
            )
            config = cluster_node_config(
                self.data,
                node,
                cluster_name=CLUSTER_NAME,
                route_password=route_password,
                routes=routes,
                public_host=None,
                now=datetime.now(UTC),
            )
            write_private(node.home / "nats.conf", config.encode())
            self.names.append(name)
            self.nodes.append(
                NatsServer(
                    config_path=node.home / "nats.conf",
                    client_url=f"nats://127.0.0.1:{client_ports[index]}",
                    monitor_port=node.monitor_port,
                    log_path=node.home / "nats.log",
                )
            )

    def start(self, count: int | None = None) -> None:
        """Start the first `count` nodes (all by default) at once: none is healthy before a
        JetStream meta leader exists, which takes a majority."""
        if not self.nodes:
            self.render()
        starting = self.nodes[: self.size if count is None else count]
        with ThreadPoolExecutor(self.size) as pool:
            for future in [pool.submit(node.start, 60.0) for node in starting]:
                future.result()
            # In its own thread: a caller may be inside a running event loop.
            pool.submit(asyncio.run, self._fleet_jetstream_ready(starting)).result()

    async def _fleet_jetstream_ready(self, nodes: list[NatsServer], within: float = 60.0) -> None:
        """Wait until each node answers the FLEET account's JetStream requests: a node reports
        healthy before the account's JetStream is enabled on it, and a request in between gets
        "JetStream not enabled for account" or no responder."""
        for node in nodes:
            deadline = time.monotonic() + within
            while True:
                try:
                    nc = await connect(
                        node.client_url,
                        credentials=self.credentials,
                        max_reconnect_attempts=0,
                        connect_timeout=2.0,
                    )
                    try:
                        await nc.jetstream().account_info()
                        break
                    finally:
                        await nc.close()
                except Exception as e:  # any failure: not ready yet
                    if time.monotonic() > deadline:
                        raise AssertionError(
                            f"JetStream of the FLEET account not ready on {node.client_url} "
                            f"within {within:.0f} s: {e!r}"
                        ) from e
                    await asyncio.sleep(0.2)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(OSError):
                node.stop()

    def index_of(self, server_name: str) -> int:
        return self.names.index(server_name)

    def jsz(self, index: int) -> dict[str, Any]:
        """The node's own view of its JetStream streams (its replica, not the leader's)."""
        url = f"http://127.0.0.1:{self.nodes[index].monitor_port}/jsz?streams=true&accounts=true"
        with urllib.request.urlopen(url, timeout=5) as response:
            answer: dict[str, Any] = orjson.loads(response.read())
        return answer

    def stream_last_seq(self, index: int, stream: str) -> int:
        """The last sequence of `stream` in node `index`'s own replica (0 if it has none)."""
        for account in self.jsz(index).get("account_details", []):
            for detail in account.get("stream_detail", []):
                if detail.get("name") == stream:
                    return int(detail["state"]["last_seq"])
        return 0

    def monitor(self, index: int, path: str) -> Any:
        url = f"http://127.0.0.1:{self.nodes[index].monitor_port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return orjson.loads(response.read())

    def client_names(self, index: int, prefix: str = "") -> set[str]:
        """The names of the client connections node `index` holds (`/connz`), those starting
        with `prefix`."""
        names: set[str] = set()
        offset = 0
        while True:
            page = self.monitor(index, f"/connz?limit=1024&offset={offset}")
            connections = page.get("connections") or []
            names.update(
                str(c.get("name", ""))
                for c in connections
                if str(c.get("name", "")).startswith(prefix)
            )
            offset += len(connections)
            if not connections or offset >= int(page.get("total", 0)):
                return names

    def raft_groups(self, index: int) -> set[str]:
        """The JetStream Raft groups node `index` takes part in, streams' and consumers'
        (`S-…`, `C-…`), over every account (`/raftz`); the meta group is not counted."""
        groups: set[str] = set()
        for account in self.jsz(index).get("account_details", []):
            answer = self.monitor(index, f"/raftz?acc={account['id']}")
            for names in (answer or {}).values():
                groups.update(name for name in names if name != "_meta_")
        return groups

    def consumers_on(self, index: int, stream: str) -> int:
        """How many consumers of `stream` node `index` holds a replica of."""
        answer = self.monitor(index, "/jsz?accounts=true&streams=true&consumers=true")
        return sum(
            len(detail.get("consumer_detail") or [])
            for account in answer.get("account_details", [])
            for detail in account.get("stream_detail", [])
            if detail.get("name") == stream
        )
