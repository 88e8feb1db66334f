"""`fleetbus keys`: the keyring that seals secrets at rest; rotation and crypto-shredding.

`ls` shows key ids and scopes (never keys). `rotate` makes a new key-encryption key (every
data key re-wrapped, the old KEK deleted) and new data keys (new secrets are sealed with them;
old secrets stay readable with the old ones). `shred --cluster C` destroys every data key of a
cluster: what was sealed for it alone (its desired state, its own overrides' secret values)
can never be read again, though the log that holds it still replays. `fleetbus cluster rm`
shreds the removed cluster's keys by itself. Both are recorded as events, with ids only.
"""

from __future__ import annotations

import argparse
from typing import Any

from api.errors import InvalidRequest
from fleetbus.client import HubClient, add_hub_options
from fleetbus.output import add_output_option, write_document


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("keys", help="the keyring that seals secrets at rest (admin)")
    commands = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    listing = commands.add_parser("ls", help="key ids and scopes (never key material)")
    add_output_option(listing)
    add_hub_options(listing)
    listing.set_defaults(handler=handle_list)

    rotate = commands.add_parser(
        "rotate", help="a new key-encryption key and new data keys; old secrets stay readable"
    )
    only = rotate.add_mutually_exclusive_group()
    only.add_argument(
        "--kek-only", action="store_true", help="only a new KEK (every data key re-wrapped)"
    )
    only.add_argument(
        "--data-keys-only", action="store_true", help="only new data keys, the KEK stays"
    )
    rotate.add_argument(
        "--cluster",
        action="append",
        default=[],
        metavar="C",
        help="renew only these clusters' data keys (repeatable; default: every scope)",
    )
    add_hub_options(rotate)
    rotate.set_defaults(handler=handle_rotate)

    shred = commands.add_parser(
        "shred", help="destroy a cluster's data keys: its sealed secrets become unreadable"
    )
    shred.add_argument(
        "--cluster", required=True, metavar="C", help="the cluster whose data keys to destroy"
    )
    add_hub_options(shred)
    shred.set_defaults(handler=handle_shred)


def handle_list(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    keyring = client.get("/api/v1/keys")
    if args.output in ("json", "yaml"):
        write_document(keyring, args.output)
        return 0
    print(f"key-encryption key {keyring['kek']}")
    print(f"{'DATA KEY':<48}  {'SCOPE':<30}  {'CREATED':<20}  STATE")
    for key in keyring["data_keys"]:
        state = "active" if key["active"] else "retired (opens old secrets)"
        created = str(key["created"])[:19].replace("T", " ")
        print(f"{key['id']:<48}  {key['scope']:<30}  {created:<20}  {state}")
    for key in keyring["shredded"]:
        at = str(key["at"])[:19].replace("T", " ")
        print(f"{key['id']:<48}  {key['scope']:<30}  {'':<20}  shredded {at}")
    return 0


def handle_rotate(args: argparse.Namespace) -> int:
    if args.kek_only and args.cluster:
        raise InvalidRequest("--cluster names data keys to renew; it cannot go with --kek-only")
    client = HubClient.from_args(args)
    rotated = client.post(
        "/api/v1/keys/rotate",
        {
            "kek": not args.data_keys_only,
            "data_keys": not args.kek_only,
            "clusters": args.cluster,
        },
    )
    if rotated["previous_kek"]:
        print(
            f"new key-encryption key {rotated['kek']} (was {rotated['previous_kek']}); "
            f"{rotated['rewrapped']} data key(s) re-wrapped"
        )
    for key_id in rotated["data_keys"]:
        print(f"new data key {key_id}")
    print(f"recorded as event {rotated['event']}")
    return 0


def handle_shred(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    shredded = client.post("/api/v1/keys/shred", {"cluster": args.cluster})
    if not shredded["key_ids"]:
        print(f"cluster {args.cluster} has no data keys; nothing shredded")
        return 0
    for key_id in shredded["key_ids"]:
        print(f"shredded data key {key_id}")
    print(
        f"secrets sealed for cluster {args.cluster} can no longer be read; "
        f"recorded as event {shredded['event']}"
    )
    return 0
