"""The options that name a remote source, shared by `fleetbus publish` and `fleetbus source`.

`--repo URL --chart C` is a chart in a Helm repository, `--chart oci://registry/path/chart` a
chart in an OCI registry, `--git URL [--ref R] [--path P]` a directory of a Git repository;
`--version` takes a chart version or a semver constraint.
"""

from __future__ import annotations

import argparse
from typing import Any

from fleetbus.errors import ConflictingOptions, MissingOption


def add_remote_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_argument_group(
        "remote source (the hub fetches it)"
        if not required
        else "what to follow (one of --repo with --chart, --chart oci://..., --git)"
    )
    group.add_argument(
        "--chart",
        metavar="C",
        help="a chart name in the --repo repository, or oci://registry/path/chart",
    )
    group.add_argument("--repo", metavar="URL", help="a Helm repository (https://...)")
    group.add_argument(
        "--version",
        metavar="V",
        default="",
        help="chart version or semver constraint, e.g. 1.2.3 or '^1.2' (default: the latest)",
    )
    group.add_argument("--git", metavar="URL", help="a Git repository")
    group.add_argument(
        "--ref", metavar="R", default="", help="branch, tag or commit (default: HEAD)"
    )
    group.add_argument(
        "--path", dest="git_path", metavar="P", default="", help="directory inside the repository"
    )
    group.add_argument(
        "--plain-http",
        action="store_true",
        help="the OCI registry speaks HTTP, not HTTPS (like helm --plain-http)",
    )
    group.add_argument(
        "--credentials",
        metavar="NAME",
        default="",
        help="stored source credentials to fetch with (`fleetbus source credentials set`)",
    )


def wants_remote(args: argparse.Namespace) -> bool:
    return bool(args.chart or args.repo or args.git)


def remote_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The `source` document of the API from --chart/--repo/--git; refuses a mix."""
    if args.git:
        if args.chart or args.repo:
            raise ConflictingOptions("--git cannot be combined with --chart or --repo")
        kind, url = "git", args.git
    elif args.repo:
        if not args.chart:
            raise MissingOption("--repo needs --chart: the chart's name in the repository")
        kind, url = "helm-repo", args.repo
    elif args.chart and args.chart.startswith("oci://"):
        kind, url = "oci", args.chart
    elif args.chart:
        raise MissingOption(f"--chart {args.chart} needs --repo URL (or give an oci:// reference)")
    else:
        raise MissingOption("name a source: --repo URL --chart C, --chart oci://..., or --git URL")
    if kind != "git" and (args.ref or args.git_path):
        raise ConflictingOptions("--ref and --path apply to --git sources only")
    if kind == "git" and args.version:
        raise ConflictingOptions("--version applies to charts; a Git source takes --ref")
    return {
        "kind": kind,
        "url": url,
        "chart": args.chart if kind == "helm-repo" else "",
        "version": args.version,
        "ref": args.ref,
        "path": args.git_path,
        "plain_http": args.plain_http,
        "credentials": args.credentials,
    }


def provenance_text(provenance: dict[str, Any] | None) -> str:
    if not provenance:
        return "-"
    if provenance.get("kind") == "git":
        where = f" {provenance['path']}" if provenance.get("path") else ""
        return f"git {provenance['url']}{where} @ {provenance.get('commit', '')[:12]}"
    digest = provenance.get("digest", "")
    return (
        f"{provenance['kind']} {provenance['url']} chart {provenance.get('chart')} "
        f"{provenance.get('chart_version')} ({digest[:19]})"
    )
