"""`fleetbus cluster`: register, list, relabel and deregister clusters.

`register --out DIR` also issues the cluster's client certificate (from the hub's CA, its
fingerprint recorded in `ClusterRegistered`), waits until the hub admits it, and writes the
cluster's bundle: everything an edge needs to join the hub. `write_bundle` is the one place the
bundle is assembled. `rm` waits until the hub has revoked the cluster's access.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson

from api.clusters import (
    ClusterRecord,
    change_cluster_labels,
    deregister_cluster,
    list_clusters,
    parse_label_arguments,
    register_cluster,
)
from api.errors import InvalidRequest
from fleetbus.access import hub_leaf_urls, issue_cluster_certificate, wait_for_access
from fleetbus.bundle import EdgeSettings, write_edge_bundle
from fleetbus.commands.publish import local_actor
from fleetbus.datadir import DEFAULT_DATA_DIR, DataDir
from fleetbus.local import open_local_store
from fleetbus.pki import HubPki, IssuedCertificate


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("cluster", help="register, list, label and remove clusters")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    add = verbs.add_parser("register", parents=[common], help="register a cluster")
    add.add_argument("name")
    add.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    add.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="write the cluster's bundle into DIR"
    )
    add.set_defaults(handler=handle_register)

    ls = verbs.add_parser("ls", parents=[common], help="list registered clusters")
    ls.add_argument("-o", "--output", choices=("table", "json"), default="table")
    ls.add_argument("--all", action="store_true", help="include deregistered clusters")
    ls.set_defaults(handler=handle_ls)

    label = verbs.add_parser(
        "label", parents=[common], help="set (KEY=VALUE) or remove (KEY-) labels"
    )
    label.add_argument("name")
    label.add_argument("labels", nargs="+", metavar="KEY=VALUE|KEY-")
    label.set_defaults(handler=handle_label)

    rm = verbs.add_parser(
        "rm", parents=[common], help="deregister a cluster (its tasksets are no longer placed)"
    )
    rm.add_argument("name")
    rm.set_defaults(handler=handle_rm)


def labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def write_bundle(
    out: Path,
    record: ClusterRecord,
    *,
    data: DataDir | None = None,
    issued: IssuedCertificate | None = None,
) -> Path:
    """Write the cluster's bundle directory: `cluster.json` (name and labels) and, with a
    certificate, the edge's files (CA, certificate, key, leaf config, connector settings,
    Helm values; see `fleetbus.bundle`)."""
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    path = out / "cluster.json"
    path.write_bytes(
        orjson.dumps({"name": record.name, "labels": record.labels}, option=orjson.OPT_INDENT_2)
        + b"\n"
    )
    if data is not None and issued is not None:
        settings = EdgeSettings(
            cluster=record.name, hub_urls=hub_leaf_urls(data), labels=dict(record.labels)
        )
        ca_pem = HubPki(data.root / "pki").ca_cert.read_bytes()
        write_edge_bundle(out, settings, ca_pem=ca_pem, issued=issued)
    return out


async def handle_register(args: argparse.Namespace) -> int:
    labels, removed = parse_label_arguments(args.label)
    if removed:
        raise InvalidRequest("--label takes KEY=VALUE")
    data = DataDir(args.data_dir)
    now = datetime.now(UTC)
    # Only a bundle carries the key, so a certificate is issued only when one is written;
    # and only for a hub edges can reach (checked before anything is recorded).
    issued = None
    if args.out is not None:
        hub_leaf_urls(data)
        issued = issue_cluster_certificate(data, args.name, now)
    store = await open_local_store(args.data_dir)
    try:
        record = await register_cluster(
            store,
            args.name,
            labels,
            actor=local_actor(),
            now=now,
            certificate_fingerprint=issued.fingerprint if issued else "",
        )
    finally:
        await store.close()
    print(f"cluster {record.name} registered ({labels_text(record.labels)})")
    if args.out is not None and issued is not None:
        await wait_for_access(data, record.name, issued.fingerprint)
        print(f"bundle written to {write_bundle(args.out, record, data=data, issued=issued)}")
    else:
        print("no bundle written (--out DIR): its edge cannot connect until it has one")
    return 0


async def handle_ls(args: argparse.Namespace) -> int:
    store = await open_local_store(args.data_dir)
    try:
        records = await list_clusters(store, include_deregistered=args.all)
    finally:
        await store.close()
    if args.output == "json":
        sys.stdout.buffer.write(
            orjson.dumps(msgspec.to_builtins(records), option=orjson.OPT_INDENT_2) + b"\n"
        )
        return 0
    print(f"{'NAME':<24}  {'STATE':<12}  {'REGISTERED':<20}  LABELS")
    for record in records:
        when = record.registered_at.strftime("%Y-%m-%dT%H:%M:%SZ") if record.registered_at else "-"
        state = "registered" if record.registered else "deregistered"
        print(f"{record.name:<24}  {state:<12}  {when:<20}  {labels_text(record.labels)}")
    return 0


async def handle_label(args: argparse.Namespace) -> int:
    labels, removed = parse_label_arguments(args.labels)
    store = await open_local_store(args.data_dir)
    try:
        record = await change_cluster_labels(
            store, args.name, labels, removed, actor=local_actor(), now=datetime.now(UTC)
        )
    finally:
        await store.close()
    print(f"cluster {record.name} labels: {labels_text(record.labels)}")
    return 0


async def handle_rm(args: argparse.Namespace) -> int:
    store = await open_local_store(args.data_dir)
    try:
        record = await deregister_cluster(
            store, args.name, actor=local_actor(), now=datetime.now(UTC)
        )
    finally:
        await store.close()
    await wait_for_access(DataDir(args.data_dir), record.name, None)
    print(f"cluster {record.name} deregistered; its access to the hub is revoked")
    return 0
