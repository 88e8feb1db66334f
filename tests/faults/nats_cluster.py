"""A real 3-node NATS cluster on loopback, from `infra/nats/cluster-node.conf.tmpl`.

Three nats-server processes (`fleetbus.natsserver.NatsServer`), each with its own store, client
port, route port and monitoring port, routed to one another, all in JetStream domain `hub` with
the hub's accounts. The passwords come from a hub data dir, so `fleetbus up --nats-url ...
--data-dir D` can run on the cluster as the same `hub` user.
"""

from __future__ import annotations

import contextlib
import secrets
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from access.private_files import write_private
from fleetbus.datadir import DataDir
from fleetbus.natsserver import NatsServer, free_port, render_template

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

    @property
    def password(self) -> str:
        return self.data.secrets()["hub_password"]

    def render(self) -> None:
        """Write every node's config (ports are picked once: a restarted node keeps them)."""
        self.data.create()
        creds = self.data.secrets()
        route_password = secrets.token_urlsafe(16)
        client_ports = [free_port() for _ in range(self.size)]
        route_ports = [free_port() for _ in range(self.size)]
        routes = "\n".join(
            f'    "nats-route://route:{route_password}@127.0.0.1:{port}"' for port in route_ports
        )
        for index in range(self.size):
            name = f"hub-{index + 1}"
            home = self.root / name
            (home / "store").mkdir(parents=True, exist_ok=True)
            monitor_port = free_port()
            config = render_template(
                "cluster-node.conf.tmpl",
                server_name=name,
                host="127.0.0.1",
                port=client_ports[index],
                monitor_port=monitor_port,
                store_dir=home / "store",
                cluster_name=CLUSTER_NAME,
                cluster_host="127.0.0.1",
                cluster_port=route_ports[index],
                route_password=route_password,
                routes=routes,
                sys_password=creds["sys_password"],
                hub_password=creds["hub_password"],
                cluster_users="",
                leafnodes="",
            )
            write_private(home / "nats.conf", config.encode())
            self.names.append(name)
            self.nodes.append(
                NatsServer(
                    config_path=home / "nats.conf",
                    client_url=f"nats://127.0.0.1:{client_ports[index]}",
                    monitor_port=monitor_port,
                    log_path=home / "nats.log",
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
