"""What `fleetbus ... --help` prints beyond the options: descriptions, examples, one layout.

Every command's page gets a description (its one-line help when it has no longer one) and,
for the commands people reach for first, examples to copy. One formatter lays out every page:
prose paragraphs are filled to the terminal's width, indented lines (commands, examples) are
kept as written. `tests/unit/test_cli_help.py` walks the whole command tree and fails on a
command, option or argument without help.
"""

from __future__ import annotations

import argparse
import re

EXAMPLES: dict[str, list[str]] = {
    "up": [
        "fleetbus up                                  # hub on 127.0.0.1:8080, data in ./.fleetbus",
        "fleetbus up --sim-clusters 3 --leaf-port 7422   # with three simulated clusters",
        "fleetbus up --tls --public-host hub.example.com",
    ],
    "render": [
        "fleetbus render charts/web -f values-prod.yaml --name web",
        "kubectl kustomize overlays/prod | fleetbus render - --name shop -o json",
    ],
    "publish": [
        "fleetbus publish charts/web --name web --selector env=prod --batch-size 5 --wait",
        "fleetbus publish --repo https://charts.example.com --chart web --version '^1.2' "
        "--cluster edge-1",
        "fleetbus publish overlays/prod --name shop --depends-on cert-manager",
    ],
    "rollback": ["fleetbus rollback web --to-version 3"],
    "retire": ["fleetbus retire web --reason 'replaced by web-v2'"],
    "status": [
        "fleetbus status                       # every taskset on every cluster",
        "fleetbus status web -o wide",
        "fleetbus status --selector env=prod --watch",
    ],
    "events": [
        "fleetbus events --cluster edge-1 --taskset web",
        "fleetbus events --since 2026-11-24T10:00:00Z --until 2026-11-24T11:00:00Z -o json",
        "fleetbus events --stream reports --watch",
        "fleetbus events --selector env=prod --taskset web",
    ],
    "state": ["fleetbus state --cluster edge-1 --at 2026-11-24T10:00:00Z"],
    "cluster register": [
        "fleetbus cluster register edge-1 --label env=prod --label region=eu --out ./edge-1",
    ],
    "cluster ls": [
        "fleetbus cluster ls -o wide          # connection, edge and controller health",
        "fleetbus cluster ls --selector 'env=prod,tier!=edge'",
    ],
    "cluster show": ["fleetbus cluster show edge-1", "fleetbus cluster show edge-1 -o yaml"],
    "cluster label": ["fleetbus cluster label edge-1 env=staging tier-"],
    "cluster rm": ["fleetbus cluster rm edge-1 --drain --drain-timeout 600"],
    "override set": [
        "fleetbus override set web --name prod-values --selector env=prod --values prod.yaml",
        "fleetbus override set web --name db --cluster edge-1 --patch db.yaml "
        "--sensitive db.password",
    ],
    "override preview": ["fleetbus override preview web --cluster edge-1"],
    "override ls": ["fleetbus override ls web --selector env=prod"],
    "blueprint publish": ["fleetbus blueprint publish prod.yaml --batch-size 10"],
    "blueprint show": ["fleetbus blueprint show prod --behind 4"],
    "blueprint assign": ["fleetbus blueprint assign prod --cluster lab-1 --version 3"],
    "rollout resume": ["fleetbus rollout resume web"],
    "notify add": [
        "fleetbus notify add oncall --url-file hook.url --format slack --min-severity error",
        "fleetbus notify add audit --url https://audit.example/fleet --format cloudevents "
        "--event TasksetPublished",
    ],
    "notify status": ["fleetbus notify status -o wide"],
    "source add": [
        "fleetbus source add platform --git https://git.example.com/platform.git --ref main "
        "--path overlays/prod --interval 2m --selector env=prod",
    ],
    "source credentials set": [
        "fleetbus source credentials set git-deploy --username deploy --password-stdin < pw.txt",
    ],
    "token create": ["fleetbus token create --role viewer --name grafana --expires-in 30d"],
    "token rotate": ["fleetbus token rotate ci --grace 10m"],
    "keys rotate": ["fleetbus keys rotate --cluster edge-1"],
    "snapshot take": ["fleetbus snapshot take -o yaml"],
    "edge": [
        "fleetbus edge --bundle ./edge-1 --kubeconfig ~/.kube/config",
        "fleetbus edge --bundle ./edge-1 --sim --health-addr 127.0.0.1:0",
    ],
    "controller": [
        "fleetbus controller --kubeconfig ~/.kube/config",
        "fleetbus controller --leader-elect --lease-namespace fleetbus-system "
        "--health-addr 0.0.0.0:8082",
    ],
    "completion": ["source <(fleetbus completion bash)"],
}
"""Examples per command path (the words after `fleetbus`)."""


class HelpFormatter(argparse.HelpFormatter):
    """Fills prose paragraphs; keeps indented lines (commands, examples) as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = re.split(r"\n\s*\n", text.strip("\n"))
        out: list[str] = []
        for paragraph in paragraphs:
            lines = paragraph.splitlines()
            if any(line.startswith((" ", "\t")) for line in lines[1:]) or (
                lines and lines[0].startswith((" ", "\t"))
            ):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(super()._fill_text(" ".join(lines), width, indent))
        return "\n\n".join(out)


def examples_text(lines: list[str]) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def finish_help(parser: argparse.ArgumentParser, path: str = "") -> None:
    """Give every command under `parser` the shared layout, a description and its examples."""
    parser.formatter_class = HelpFormatter
    if path in EXAMPLES and not parser.epilog:
        parser.epilog = examples_text(EXAMPLES[path])
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, sub in action.choices.items():
            if not sub.description and helps.get(name):
                text = str(helps[name])
                sub.description = text[0].upper() + text[1:] + "."
            finish_help(sub, f"{path} {name}".strip())
