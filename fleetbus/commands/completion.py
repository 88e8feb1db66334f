"""`fleetbus completion bash|zsh|fish`: print the shell completion script.

bash:  source <(fleetbus completion bash)
       or save it as ~/.local/share/bash-completion/completions/fleetbus
zsh:   source <(fleetbus completion zsh)
       or save it as _fleetbus in a directory of $fpath
fish:  fleetbus completion fish | source
       or save it as ~/.config/fish/completions/fleetbus.fish
"""

from __future__ import annotations

import argparse
from typing import Any

from fleetbus.completion import SHELLS, script


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "completion",
        help="print the shell completion script for bash, zsh or fish",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    print(script(args.shell), end="")
    return 0
