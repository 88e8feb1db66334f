"""Names of tasksets, clusters and overrides: DNS-1123 labels.

They double as NATS subject tokens and Kubernetes object names, so they must be lowercase
alphanumerics and '-', start and end alphanumeric, at most 63 characters; in particular never
contain '.', '*', '>' or whitespace.
"""

from __future__ import annotations

import re

from taskset.errors import InvalidName

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 63


def check_name(what: str, name: str) -> str:
    """Return `name` if it is a valid DNS-1123 label, else raise `InvalidName` saying why."""
    if not name:
        raise InvalidName(what, name, "it is empty")
    if len(name) > MAX_NAME:
        raise InvalidName(what, name, f"it is {len(name)} characters long, the limit is {MAX_NAME}")
    if not _LABEL.match(name):
        raise InvalidName(
            what,
            name,
            "use lowercase letters, digits and '-', starting and ending with a letter or digit",
        )
    return name
