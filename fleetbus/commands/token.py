"""`fleetbus token`: create, list and revoke the hub's API tokens (admin only).

`create` prints the token as its last line, alone, so scripts can take it with `tail -n1`; the
hub keeps only its digest, so it cannot be shown again.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from fleetbus.client import HubClient, add_hub_options

ROLES = ("viewer", "publisher", "admin")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("token", help="manage API tokens (admin)")
    commands = parser.add_subparsers(dest="token_command", required=True, metavar="ACTION")

    create = commands.add_parser("create", help="create a token; prints it as the last line")
    create.add_argument("--role", choices=ROLES, required=True)
    create.add_argument("--name", default="", metavar="N", help="a name for it (DNS label)")
    add_hub_options(create)
    create.set_defaults(handler=handle_create)

    listing = commands.add_parser("ls", help="list tokens (names and roles, never secrets)")
    listing.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_hub_options(listing)
    listing.set_defaults(handler=handle_list)

    revoke = commands.add_parser("revoke", help="revoke a token by id or name")
    revoke.add_argument("target", metavar="ID_OR_NAME")
    add_hub_options(revoke)
    revoke.set_defaults(handler=handle_revoke)


def handle_create(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    created = client.post("/api/v1/tokens", {"role": args.role, "name": args.name})
    info = created["info"]
    print(f"created {info['role']} token {info['name']} (id {info['id']}); it is shown only once:")
    print(created["token"])
    return 0


def handle_list(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    tokens = client.get("/api/v1/tokens")
    if args.output == "json":
        sys.stdout.buffer.write(orjson.dumps(tokens, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    print(f"{'ID':<14}  {'NAME':<24}  {'ROLE':<10}  {'CREATED':<20}  BY")
    for token in tokens:
        created = str(token["created_at"])[:19].replace("T", " ")
        print(
            f"{token['id']:<14}  {token['name']:<24}  {token['role']:<10}  {created:<20}  "
            f"{token.get('created_by', '')}"
        )
    return 0


def handle_revoke(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    revoked = client.delete(f"/api/v1/tokens/{args.target}")
    print(f"revoked {revoked['role']} token {revoked['name']} (id {revoked['id']})")
    return 0
