"""`fleetbus token`: create, list, rotate and revoke the hub's API tokens (admin only).

A token belongs to the project the command acts in (`--project`); an org admin acting in the
default project makes org-level tokens, which hold their role in every project.

`create` and `rotate` print the token as their last line, alone, so scripts can take it with
`tail -n1`; the hub keeps only its digest, so it cannot be shown again. Tokens expire (90 days
unless `--expires-in` says otherwise); `rotate` gives a token a new secret and keeps the old one
working for `--grace` (5 minutes by default). Rotating `admin` also rewrites the hub's
`admin.token` file.
"""

from __future__ import annotations

import argparse
from typing import Any

from fleetbus.client import HubClient, add_hub_options
from fleetbus.options import duration
from fleetbus.output import Column, add_output_option, emit, when

ROLES = ("viewer", "publisher", "admin")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("token", help="manage API tokens (admin)")
    commands = parser.add_subparsers(dest="token_command", required=True, metavar="ACTION")

    create = commands.add_parser("create", help="create a token; prints it as the last line")
    create.add_argument(
        "--role",
        choices=ROLES,
        required=True,
        help="what the token may do: admin (everything), publisher (publish, override, "
        "rollout), viewer (read only)",
    )
    create.add_argument("--name", default="", metavar="N", help="a name for it (DNS label)")
    create.add_argument(
        "--expires-in",
        type=duration,
        default=90 * 86400,
        metavar="DURATION",
        help="how long it lives: 90d (default), 12h, 30m; at most 365d",
    )
    add_hub_options(create)
    create.set_defaults(handler=handle_create)

    rotate = commands.add_parser(
        "rotate", help="give a token a new secret; prints it as the last line"
    )
    rotate.add_argument("target", metavar="ID_OR_NAME", help="the token's id or name")
    rotate.add_argument(
        "--grace",
        type=duration,
        default=300,
        metavar="DURATION",
        help="how long the old secret keeps working (default 5m, at most 1d)",
    )
    rotate.add_argument(
        "--expires-in",
        type=duration,
        default=None,
        metavar="DURATION",
        help="the new secret's lifetime (default: the old one's)",
    )
    add_hub_options(rotate)
    rotate.set_defaults(handler=handle_rotate)

    listing = commands.add_parser("ls", help="list tokens (names and roles, never secrets)")
    add_output_option(listing)
    add_hub_options(listing)
    listing.set_defaults(handler=handle_list)

    revoke = commands.add_parser("revoke", help="revoke a token by id or name")
    revoke.add_argument("target", metavar="ID_OR_NAME", help="the token's id or name")
    add_hub_options(revoke)
    revoke.set_defaults(handler=handle_revoke)


def handle_create(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    created = client.post(
        "/api/v1/tokens",
        {"role": args.role, "name": args.name, "expires_in_seconds": args.expires_in},
    )
    info = created["info"]
    print(
        f"created {info['role']} token {info['name']} (id {info['id']}, expires "
        f"{_when(info.get('expires_at'))}); it is shown only once:"
    )
    print(created["token"])
    return 0


def handle_rotate(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    body: dict[str, int] = {"grace_seconds": args.grace}
    if args.expires_in is not None:
        body["expires_in_seconds"] = args.expires_in
    rotated = client.post(f"/api/v1/tokens/{args.target}/rotate", body)
    info = rotated["info"]
    print(
        f"rotated {info['role']} token {info['name']} (id {info['id']}, expires "
        f"{_when(info.get('expires_at'))}); the old secret works for {args.grace} s more; "
        "the new one is shown only once:"
    )
    print(rotated["token"])
    return 0


def _when(value: object) -> str:
    return str(value)[:19].replace("T", " ") if value else "never"


def handle_list(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    tokens = client.get("/api/v1/tokens")
    emit(tokens, args.output, columns=TOKEN_COLUMNS)
    return 0


TOKEN_COLUMNS = [
    Column("ID", lambda t: t["id"]),
    Column("NAME", lambda t: t["name"]),
    Column("ROLE", lambda t: t["role"]),
    Column("PROJECT", lambda t: t.get("project") or "(org)"),
    Column("CREATED", lambda t: _when(t["created_at"])),
    Column("EXPIRES", lambda t: _when(t.get("expires_at"))),
    Column("BY", lambda t: t.get("created_by")),
    Column("ROTATED", lambda t: when(t.get("rotated_at")), wide=True),
]


def handle_revoke(args: argparse.Namespace) -> int:
    client = HubClient.from_args(args)
    revoked = client.delete(f"/api/v1/tokens/{args.target}")
    print(f"revoked {revoked['role']} token {revoked['name']} (id {revoked['id']})")
    return 0
