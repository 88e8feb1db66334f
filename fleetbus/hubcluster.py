"""The nodes of a hub's NATS cluster: their configs, rendered from the hub's data dir.

`fleetbus up --nats-url n1,n2,n3 --replicas 3` runs the hub on a NATS cluster it does not
start. Every node must trust the hub's operator (the same operator JWT, the system account
preloaded, a `full` nats-based resolver of its own) and have a TLS leafnode listener with a
server certificate from the hub's CA, so an edge may dial any node: this module renders such a
config from `infra/nats/cluster-node.conf.tmpl` for one node. Accounts and revocations then
reach every node through the resolver; no node's config changes after it is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from access.permissions import LeafListener
from fleetbus.datadir import DataDir
from fleetbus.edgehub import hub_pki, server_hosts
from fleetbus.natsserver import render_template


@dataclass(frozen=True)
class ClusterNode:
    """Where one node listens and keeps its state."""

    server_name: str
    host: str
    port: int
    monitor_port: int
    cluster_port: int
    leaf_port: int
    home: Path
    leaf_host: str = "0.0.0.0"

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def resolver_dir(self) -> Path:
        return self.home / "resolver"


def cluster_node_config(
    data: DataDir,
    node: ClusterNode,
    *,
    cluster_name: str,
    route_password: str,
    routes: list[str],
    public_host: str | None,
    now: datetime,
) -> str:
    """The config of `node`, trusting the hub of `data` (its operator and CA)."""
    node.store_dir.mkdir(parents=True, exist_ok=True)
    node.resolver_dir.mkdir(parents=True, exist_ok=True)
    pki = hub_pki(data)
    pki.ensure_server_cert(server_hosts(public_host), now)
    listener = LeafListener(pki=pki, host=node.leaf_host, port=node.leaf_port)
    return render_template(
        "cluster-node.conf.tmpl",
        server_name=node.server_name,
        host=node.host,
        port=node.port,
        monitor_port=node.monitor_port,
        store_dir=node.store_dir,
        cluster_name=cluster_name,
        cluster_host=node.host,
        cluster_port=node.cluster_port,
        route_password=route_password,
        routes="\n".join(f'    "{route}"' for route in routes),
        operator_mode=data.nats_authority().server_config(node.resolver_dir),
        leafnodes=listener.render(),
    )
