"""The edge bundle: everything one cluster needs to join the fleet, in one directory.

`fleetbus cluster register NAME --out DIR` writes it; `fleetbus edge --bundle DIR` and the edge
Helm chart read it. It holds no secret of the hub: only the CA certificate, the cluster's own
certificate and key, and settings.

  ca.crt        the fleetbus CA (trust root for the hub's server certificate)
  cluster.crt   the cluster's client certificate (DNS SAN = cluster name)
  cluster.key   its private key (0600)
  cluster.creds its NATS user credentials: user JWT and nkey seed (0600)
  edge.json     connector settings: cluster, hub leaf URLs, intervals
  leaf.conf     a ready nats-server leaf config (paths relative to the bundle dir)
  values.yaml   Helm values for the `fleetbus-edge` chart (certificates inlined)

This module is part of the edge install: it imports nothing of the hub.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from access.cert_names import cluster_of_certificate_file
from access.errors import CertificateError
from access.private_files import write_private
from edge_connector.errors import BundleError
from events.streams import HUB_DOMAIN
from fleetbus.natsserver import render_template
from taskset.names import check_name
from taskset.projects import DEFAULT_PROJECT, project_of

if TYPE_CHECKING:
    from access.pki import IssuedCertificate

CA_FILE = "ca.crt"
CERT_FILE = "cluster.crt"
KEY_FILE = "cluster.key"
CREDS_FILE = "cluster.creds"
SETTINGS_FILE = "edge.json"
LEAF_CONF_FILE = "leaf.conf"
VALUES_FILE = "values.yaml"
LEAF_MAX_FILE_STORE = 2560 << 20
"""The leaf's JetStream file store limit (an accounting limit, not the disk in use): the outbox
reserves its 1 GiB (`OUTBOX_MAX_BYTES`) when created, and nats-server counts that reservation
again when an edge restarting on its store creates the stream once more, so the limit holds
twice the outbox plus room for the desired-state mirror. The edge chart's volume is 3 GiB."""
LEAF_MAX_MEMORY_STORE = 8 << 20
"""Both edge streams are file streams; memory storage holds consumer state only."""

DESIRED_SOURCES = ("mirror", "durable")


class EdgeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the connector and the leaf need besides the certificates."""

    cluster: str
    hub_urls: list[str]
    """Leafnode URLs of the hub: all `tls://host:port` or all `wss://host:port`."""
    hub_domain: str = HUB_DOMAIN
    desired_source: str = "mirror"
    """`mirror` (the leaf's filtered mirror, survives hub outages) or `durable` (pull the
    hub's durable consumer through the leaf)."""
    inventory_interval: float = 30.0
    proxy_url: str = ""
    """An HTTP proxy for `wss://` hub URLs (nats-server leaf remotes `proxy { url }`)."""
    labels: dict[str, str] = msgspec.field(default_factory=dict)


@dataclass(frozen=True)
class EdgeBundle:
    root: Path
    settings: EdgeSettings

    @property
    def cluster(self) -> str:
        return self.settings.cluster

    @property
    def ca_file(self) -> Path:
        return self.root / CA_FILE

    @property
    def cert_file(self) -> Path:
        return self.root / CERT_FILE

    @property
    def key_file(self) -> Path:
        return self.root / KEY_FILE

    @property
    def creds_file(self) -> Path:
        return self.root / CREDS_FILE


def check_hub_urls(urls: list[str]) -> list[str]:
    if not urls:
        raise BundleError("an edge bundle needs at least one hub URL")
    schemes = {url.split("://", 1)[0] for url in urls}
    if schemes not in ({"tls"}, {"wss"}):
        raise BundleError(
            f"hub URLs must be all tls:// or all wss:// (nats-server leaf remotes), got {urls}"
        )
    return urls


def leaf_config(
    settings: EdgeSettings,
    *,
    port: int,
    monitor_port: int,
    store_dir: Path | str,
    connector_password: str,
    ca_file: Path | str,
    cert_file: Path | str,
    key_file: Path | str,
    creds_file: Path | str,
    max_file_store: int = LEAF_MAX_FILE_STORE,
    max_memory_store: int = LEAF_MAX_MEMORY_STORE,
) -> str:
    """The edge's nats-server config (rendered from `infra/nats/leaf.conf.tmpl`); the JetStream
    limits in bytes."""
    proxy = ""
    if settings.proxy_url:
        proxy = f'      proxy {{ url: "{settings.proxy_url}" }}'
    return render_template(
        "leaf.conf.tmpl",
        server_name=f"edge-{settings.cluster}",
        port=port,
        monitor_port=monitor_port,
        store_dir=store_dir,
        domain=f"edge-{settings.cluster}",
        max_file_store=max_file_store,
        max_memory_store=max_memory_store,
        connector_password=connector_password,
        hub_urls=orjson.dumps(check_hub_urls(settings.hub_urls)).decode(),
        cert_file=cert_file,
        key_file=key_file,
        ca_file=ca_file,
        creds_file=creds_file,
        proxy=proxy,
    )


def helm_values(
    settings: EdgeSettings, ca_pem: bytes, issued: IssuedCertificate, credentials: str
) -> dict[str, Any]:
    """Values for the `fleetbus-edge` chart: identity, hub address, certificates, credentials,
    connector."""
    return {
        "cluster": settings.cluster,
        "credentials": credentials,
        "labels": dict(settings.labels),
        "hub": {
            "urls": list(settings.hub_urls),
            "domain": settings.hub_domain,
            "proxyUrl": settings.proxy_url,
        },
        "tls": {
            "ca": ca_pem.decode(),
            "cert": issued.cert_pem.decode(),
            "key": issued.key_pem.decode(),
        },
        "connector": {
            "desiredSource": settings.desired_source,
            "inventoryInterval": settings.inventory_interval,
        },
    }


def write_edge_bundle(
    out: Path,
    settings: EdgeSettings,
    *,
    ca_pem: bytes,
    issued: IssuedCertificate,
    credentials: str,
) -> Path:
    """Write the bundle for `settings.cluster` into `out` (created 0700); `credentials` is the
    cluster's `.creds` text (`access.permissions.leaf_credentials`)."""
    check_name("cluster", settings.cluster)
    check_hub_urls(settings.hub_urls)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    (out / CA_FILE).write_bytes(ca_pem)
    (out / CERT_FILE).write_bytes(issued.cert_pem)
    write_private(out / KEY_FILE, issued.key_pem)
    write_private(out / CREDS_FILE, credentials.encode())
    (out / SETTINGS_FILE).write_bytes(
        orjson.dumps(msgspec.to_builtins(settings), option=orjson.OPT_INDENT_2) + b"\n"
    )
    (out / LEAF_CONF_FILE).write_text(
        "# Run from this directory: nats-server -c leaf.conf\n"
        + leaf_config(
            settings,
            port=4222,
            monitor_port=8222,
            store_dir="./state/nats",
            connector_password="change-me",
            ca_file=f"./{CA_FILE}",
            cert_file=f"./{CERT_FILE}",
            key_file=f"./{KEY_FILE}",
            creds_file=f"./{CREDS_FILE}",
        )
    )
    import yaml  # the hub writes bundles; an edge only reads them and never needs it

    write_private(
        out / VALUES_FILE,
        yaml.safe_dump(
            helm_values(settings, ca_pem, issued, credentials), sort_keys=False
        ).encode(),
    )
    return out


def read_edge_bundle(root: Path) -> EdgeBundle:
    """Load and check a bundle: files present, settings valid, certificate of this cluster."""
    for name in (CA_FILE, CERT_FILE, KEY_FILE, SETTINGS_FILE):
        if not (root / name).is_file():
            raise BundleError(
                f"{root / name} is missing: point --bundle at a directory written by "
                "`fleetbus cluster register NAME --out DIR`"
            )
    if not (root / CREDS_FILE).is_file():
        raise BundleError(
            f"{root / CREDS_FILE} is missing: this bundle is from before NATS credentials; "
            "issue a new one with `fleetbus cluster rm NAME` and "
            "`fleetbus cluster register NAME --out DIR`"
        )
    try:
        settings = msgspec.json.decode((root / SETTINGS_FILE).read_bytes(), type=EdgeSettings)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise BundleError(f"{root / SETTINGS_FILE}: {e}") from e
    check_name("cluster", settings.cluster)
    check_hub_urls(settings.hub_urls)
    if settings.desired_source not in DESIRED_SOURCES:
        raise BundleError(
            f"{root / SETTINGS_FILE}: desired_source must be one of {DESIRED_SOURCES}, "
            f"not {settings.desired_source!r}"
        )
    if settings.desired_source == "durable" and project_of(settings.cluster) != DEFAULT_PROJECT:
        raise BundleError(
            f"{root / SETTINGS_FILE}: desired_source 'durable' is for clusters of the default "
            f"project; {settings.cluster} belongs to project {project_of(settings.cluster)}, "
            "whose clusters read their desired state through their leaf's mirror (set "
            "desired_source to 'mirror')"
        )
    try:
        named = cluster_of_certificate_file(root / CERT_FILE)
    except CertificateError as e:
        raise BundleError(f"{root / CERT_FILE}: {e}") from e
    if named != settings.cluster:
        raise BundleError(
            f"{root / CERT_FILE} was issued to cluster {named!r}, but {SETTINGS_FILE} says "
            f"{settings.cluster!r}"
        )
    return EdgeBundle(root=root, settings=settings)
