"""`fleetbus source`: standing sources the hub keeps in step, and their credentials.

    fleetbus source add NAME (--repo URL --chart C | --chart oci://REG/PATH/C | --git URL
        [--ref R] [--path P]) [--version V] [--taskset T] [--interval 5m] [--credentials C] ...
    fleetbus source ls | rm NAME | sync NAME
    fleetbus source credentials set NAME (--username U --password-stdin | --token-stdin |
        --ssh-key FILE --known-hosts FILE) | ls | rm NAME

The hub fetches (only from its `--source-host` hosts), so credentials are sent to it once,
read from stdin or a file (never from the command line, where other users of the machine and
shell histories see them), and are never printed back.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fleetbus.client import HubClient, add_hub_options
from fleetbus.commands.publish import add_placement_arguments, spec_parts
from fleetbus.errors import MissingOption
from fleetbus.output import Column, add_output_option, emit, when, write_document
from fleetbus.source_options import add_remote_arguments, provenance_text, remote_spec
from normalizer import load_values_file, merge_values


def duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 90s, 5m or 1h, got {text!r}"
        ) from e
    if not 1 <= seconds <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"must be between 1s and 7d, got {text}")
    return seconds


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "source",
        help="standing sources: charts and Git directories the hub publishes each new version of",
        description=__doc__,
    )
    commands = parser.add_subparsers(dest="source_command", required=True, metavar="COMMAND")

    add = commands.add_parser(
        "add", help="follow a chart or Git directory: each new version is published"
    )
    add.add_argument("name", metavar="NAME", help="the source's name (DNS label)")
    add_remote_arguments(add, required=True)
    add.add_argument("--taskset", metavar="T", default=None, help="the taskset (default: NAME)")
    add.add_argument(
        "--interval",
        type=duration,
        default=300.0,
        metavar="D",
        help="how often to check (default 5m)",
    )
    add.add_argument(
        "-f",
        "--values",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="Helm values file for every version it publishes; repeat to merge several",
    )
    add.add_argument(
        "-n",
        "--namespace",
        default="default",
        metavar="NS",
        help="namespace of the objects that have none (default: default)",
    )
    add_placement_arguments(add, depends_on=False)
    add_hub_options(add)
    add.set_defaults(handler=handle_add)

    listing = commands.add_parser("ls", help="standing sources, what they published, failures")
    add_output_option(listing)
    add_hub_options(listing)
    listing.set_defaults(handler=handle_ls)

    remove = commands.add_parser("rm", help="stop following a source (its versions stay)")
    remove.add_argument("name", metavar="NAME", help="the source to stop checking")
    add_hub_options(remove)
    remove.set_defaults(handler=handle_rm)

    sync = commands.add_parser("sync", help="check a source now and publish what is new")
    sync.add_argument("name", metavar="NAME", help="the source to check now")
    add_hub_options(sync)
    sync.set_defaults(handler=handle_sync)

    credentials = commands.add_parser("credentials", help="credentials for private sources (admin)")
    cred_commands = credentials.add_subparsers(
        dest="credentials_command", required=True, metavar="COMMAND"
    )
    cred_set = cred_commands.add_parser("set", help="store credentials (read from stdin or a file)")
    cred_set.add_argument("name", metavar="NAME", help="the credentials' name (DNS label)")
    cred_set.add_argument(
        "--username", default="", metavar="U", help="user name, with --password-stdin"
    )
    secret = cred_set.add_mutually_exclusive_group(required=True)
    secret.add_argument(
        "--password-stdin", action="store_true", help="basic auth: the password on stdin"
    )
    secret.add_argument("--token-stdin", action="store_true", help="a bearer token on stdin")
    secret.add_argument(
        "--ssh-key", type=Path, metavar="FILE", help="a private key for Git over SSH"
    )
    cred_set.add_argument(
        "--known-hosts",
        type=Path,
        metavar="FILE",
        help="the SSH server's known_hosts lines (ssh-keyscan), needed with --ssh-key",
    )
    add_hub_options(cred_set)
    cred_set.set_defaults(handler=handle_credentials_set)
    cred_ls = cred_commands.add_parser("ls", help="stored credentials (names and kinds only)")
    add_output_option(cred_ls)
    add_hub_options(cred_ls)
    cred_ls.set_defaults(handler=handle_credentials_ls)
    cred_rm = cred_commands.add_parser("rm", help="forget stored credentials")
    cred_rm.add_argument("name", metavar="NAME", help="the credentials to forget")
    add_hub_options(cred_rm)
    cred_rm.set_defaults(handler=handle_credentials_rm)


def handle_add(args: argparse.Namespace) -> int:
    values = merge_values([load_values_file(path) for path in args.values])
    placement, rollout = spec_parts(args)
    body = {
        "name": args.name,
        "taskset": args.taskset,
        "source": remote_spec(args),
        "namespace": args.namespace,
        "values": values,
        "placement": placement,
        "rollout": rollout,
        "interval_s": args.interval,
    }
    answer = HubClient.from_args(args).post("/api/v1/sources", body)
    verb = "added" if answer["changed"] else "unchanged:"
    print(
        f"{verb} source {answer['source']} publishing taskset {answer['taskset']}; the hub "
        f"checks it within a second, then every {args.interval:g}s "
        f"(`fleetbus source sync {answer['source']}` to check now)"
    )
    return 0


def handle_ls(args: argparse.Namespace) -> int:
    sources = HubClient.from_args(args).get("/api/v1/sources")
    if args.output in ("json", "yaml"):
        write_document(sources, args.output)
        return 0
    print(f"{'SOURCE':<20}  {'TASKSET':<20}  {'KIND':<9}  {'PUBLISHED':<9}  STATE / PROVENANCE")
    for source in sources:
        state = (
            f"failing ({source['attempts']}x): {source['last_error']}"
            if source["failing"]
            else provenance_text(source["provenance"])
        )
        published = f"v{source['published_version']}" if source["published_version"] else "-"
        line = (
            f"{source['name']:<20}  {source['taskset']:<20}  {source['kind']:<9}  "
            f"{published:<9}  {state}"
        )
        if args.output == "wide":
            line += (
                f"  url={source['url']} every={source['interval_s']:g}s"
                f" checked={when(source.get('last_checked_at'))}"
                f" next={when(source.get('next_check_at'))}"
                f" credentials={source.get('credentials') or '-'}"
            )
        print(line)
    return 0


def handle_rm(args: argparse.Namespace) -> int:
    HubClient.from_args(args).delete(f"/api/v1/sources/{args.name}")
    print(f"removed source {args.name} (what it published stays published)")
    return 0


def handle_sync(args: argparse.Namespace) -> int:
    result = HubClient.from_args(args).post(f"/api/v1/sources/{args.name}/sync")
    if result["outcome"] == "failed":
        kept = f"; v{result['version']} stays" if result["version"] else ""
        print(
            f"fleetbus: error: source {args.name} failed: {result['reason']}{kept}", file=sys.stderr
        )
        return 1
    print(
        f"{result['outcome']}: {result['taskset']} v{result['version']} from "
        f"{provenance_text(result['provenance'])}"
    )
    return 0


def handle_credentials_set(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"username": args.username}
    if args.password_stdin:
        if not args.username:
            raise MissingOption("--password-stdin needs --username")
        body.update(kind="basic", password=sys.stdin.readline().rstrip("\r\n"))
    elif args.token_stdin:
        body.update(kind="token", token=sys.stdin.readline().rstrip("\r\n"))
    else:
        if args.known_hosts is None:
            raise MissingOption(
                "--ssh-key needs --known-hosts FILE: the SSH server's host key is always "
                "checked (`ssh-keyscan -p PORT HOST` prints its lines)"
            )
        body.update(
            kind="ssh-key",
            ssh_key=_read_option_file("--ssh-key", args.ssh_key),
            known_hosts=_read_option_file("--known-hosts", args.known_hosts),
        )
    answer = HubClient.from_args(args).put(f"/api/v1/source-credentials/{args.name}", body)
    user = f" for {answer['username']}" if answer.get("username") else ""
    print(f"stored {answer['kind']} credentials {answer['name']}{user}")
    return 0


def _read_option_file(option: str, path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise MissingOption(f"{option} {path}: cannot read it ({reason})") from e


CREDENTIAL_COLUMNS = [
    Column("NAME", lambda c: c["name"]),
    Column("KIND", lambda c: c["kind"]),
    Column("USERNAME", lambda c: c.get("username")),
]


def handle_credentials_ls(args: argparse.Namespace) -> int:
    entries = HubClient.from_args(args).get("/api/v1/source-credentials")
    emit(entries, args.output, columns=CREDENTIAL_COLUMNS)
    return 0


def handle_credentials_rm(args: argparse.Namespace) -> int:
    HubClient.from_args(args).delete(f"/api/v1/source-credentials/{args.name}")
    print(f"removed credentials {args.name}")
    return 0
