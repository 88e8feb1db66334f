"""The `fleetbus` command line.

Starting it imports only what the command given needs: the module of that one subcommand
(`fleetbus.commands.<name>`), which imports its own dependencies. The other subcommands appear
in `--help` from the table below without being imported, so `fleetbus --help` and a mistyped
command cost a fresh interpreter and argparse, not the hub, the Helm engine or NATS; an edge
install, which lacks the hub's packages, can run `fleetbus edge` and `fleetbus controller`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fleetbus.helptext import finish_help

COMMANDS: dict[str, tuple[str, str]] = {
    "edge": (
        "edge",
        "run a cluster's edge: leaf nats-server, connector and (with --kubeconfig) the "
        "cluster controller",
    ),
    "up": ("up", "start the embedded hub"),
    "events": ("events", "print the event log (audit replay)"),
    "render": ("render", "print the Taskset a chart, overlay or YAML bundle normalizes to"),
    "publish": (
        "publish",
        "publish a chart, overlay or YAML bundle as the next version of a taskset",
    ),
    "rollback": ("publish", "publish an earlier version's snapshot again, as the next version"),
    "retire": ("publish", "retire a taskset: every cluster removes it (running preDelete first)"),
    "token": ("token", "manage API tokens (admin)"),
    "source": (
        "source",
        "standing sources: charts and Git directories the hub publishes each new version of",
    ),
    "keys": ("keys", "the keyring that seals secrets at rest (admin)"),
    "api": (
        "api",
        "serve the hub's API from one more process (a hub on a NATS cluster)",
    ),
    "scheduler": (
        "scheduler",
        "run a scheduler against a running hub (a hub service: needs the hub's data dir)",
    ),
    "project": ("project", "create, list and show projects (tenants) and their quotas"),
    "cluster": ("cluster", "register, list, label and remove clusters"),
    "nats-node": (
        "natsnode",
        "print the config of one node of a NATS cluster for this hub (`up --nats-url`)",
    ),
    "override": ("override", "set, remove, list and preview overrides"),
    "blueprint": (
        "blueprint",
        "versioned stacks of tasksets applied to every matching cluster",
    ),
    "rollout": ("rollout", "act on a taskset's rollout"),
    "notify": (
        "notify",
        "send the fleet's events to webhooks (JSON, CloudEvents, Slack), HMAC-signed",
    ),
    "status": ("status", "desired and applied state per cluster"),
    "state": ("state", "the desired state of a cluster, as of a time"),
    "snapshot": ("snapshot", "take and list snapshots of the scheduler's fold of the log"),
    "projector": (
        "projector",
        "rebuild or fingerprint the read models (on the hub's machine: needs its data dir)",
    ),
    "controller": (
        "controller",
        "run the cluster controller (Task, Tasklet, Step, Namespace CRDs)",
    ),
    "completion": ("completion", "print the shell completion script for bash, zsh or fish"),
}
"""Every subcommand: the module `fleetbus.commands.<module>` that registers it, its help."""


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the arguments of `chosen` (its module imported) and the others' names."""
    parser = argparse.ArgumentParser(
        prog="fleetbus",
        description="Run configuration across a fleet of Kubernetes clusters.",
        epilog="Run `fleetbus COMMAND --help` for a command's options and examples. Commands "
        "that talk to a hub use --server URL and --token T (or $FLEETBUS_SERVER and "
        "$FLEETBUS_TOKEN); without them they find the hub `fleetbus up` runs from its data "
        "dir (--data-dir, default ./.fleetbus).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    module = COMMANDS[chosen][0] if chosen is not None else None
    for name, (owner, help_text) in COMMANDS.items():
        if owner != module:
            subparsers.add_parser(name, help=help_text, description=help_text)
    if module is not None:
        importlib.import_module(f"fleetbus.commands.{module}").register(subparsers)
    finish_help(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    chosen = words[0] if words and words[0] in COMMANDS else None
    if chosen == "edge":
        # The edge runs lean (`fleetbus.edge_process`): started again with its interpreter
        # and allocator settings, its modules imported without `importlib.metadata`.
        from fleetbus.edge_process import (
            become_lean,
            distribution_versions_without_metadata,
            keep_out_unused_modules,
        )

        if argv is None:
            become_lean(words)
            keep_out_unused_modules()
        with distribution_versions_without_metadata():
            parser = build_parser(chosen)
    else:
        parser = build_parser(chosen)
    args = parser.parse_args(words)
    if chosen is None or not hasattr(args, "handler"):
        build_parser().error(f"choose a command: {', '.join(COMMANDS)}")
    import asyncio

    from taskset.errors import FleetbusError

    try:
        code = args.handler(args)
        if asyncio.iscoroutine(code):
            code = asyncio.run(code)
        return int(code or 0)
    except FleetbusError as e:
        print(f"fleetbus: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
