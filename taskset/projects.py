"""Projects: the tenants of a hub, and how an object's name says which project it belongs to.

Every cluster, taskset, blueprint, override, source, token and event belongs to one project.
Names are unique per project: two projects may both have a taskset `web`. On the log, in
DESIRED subjects, in certificates and in the clusters' Kubernetes objects an object is known by
its *full name*, `<project>--<name>`, which is unique across the hub and still one DNS-1123
label (so it stays a single NATS subject token and a valid Kubernetes name). The `default`
project is the exception that keeps a single-team hub as simple as before projects existed:
its objects' full names are their bare names, so every event written before projects existed
belongs to `default` as it stands, with nothing to rewrite.

`--` is therefore reserved: a project name never contains it, and neither does the name of
anything created inside a project. Which project an object belongs to is a pure function of its
full name (`project_of`), so a read model, an event or a DESIRED subject can be attributed to
its project without another lookup.
"""

from __future__ import annotations

import msgspec

from taskset.errors import InvalidName
from taskset.names import MAX_NAME, check_name

DEFAULT_PROJECT = "default"
SEPARATOR = "--"
MAX_PROJECT_NAME = 20
"""Short enough that a project's objects keep most of the 63 characters of a label."""


def check_project_name(name: str) -> str:
    """`name` if it can name a project: a DNS-1123 label without `--`, at most 20 characters."""
    check_name("project", name)
    if len(name) > MAX_PROJECT_NAME:
        raise InvalidName(
            "project", name, f"it is {len(name)} characters long, the limit is {MAX_PROJECT_NAME}"
        )
    if SEPARATOR in name:
        raise InvalidName("project", name, f"'{SEPARATOR}' separates a project from a name")
    return name


def full_name(project: str, what: str, name: str) -> str:
    """The hub-wide name of `name` in `project`; a full name of `project` is accepted as is.

    Raises `InvalidName` for a name that is not a label, that holds `--` while not being a full
    name of `project`, or whose full name would be longer than a label may be.
    """
    if project == DEFAULT_PROJECT:
        check_name(what, name)
        return name
    prefix = project + SEPARATOR
    local = name.removeprefix(prefix)
    check_name(what, local)
    if SEPARATOR in local:
        raise InvalidName(
            what, name, f"'{SEPARATOR}' is reserved: it separates a project from a name"
        )
    qualified = prefix + local
    if len(qualified) > MAX_NAME:
        raise InvalidName(
            what,
            name,
            f"with its project it is {qualified!r}, {len(qualified)} characters long; the "
            f"limit is {MAX_NAME}, so the name may have at most {MAX_NAME - len(prefix)}",
        )
    return qualified


def project_of(name: str) -> str:
    """The project an object belongs to, from its full name."""
    project, sep, _ = name.partition(SEPARATOR)
    return project if sep and project else DEFAULT_PROJECT


def short_name(name: str) -> str:
    """The name of an object inside its project (its full name without the project)."""
    project, sep, rest = name.partition(SEPARATOR)
    return rest if sep and project else name


class ProjectQuotas(msgspec.Struct, frozen=True, kw_only=True):
    """What a project may hold at most; 0 means no limit."""

    clusters: int = 0
    """Registered clusters."""
    tasksets: int = 0
    """Published, not retired tasksets."""
    log_bytes: int = 0
    """Bytes of the log its tasksets' snapshots may take (the sum of every version's body)."""

    def problems(self) -> list[str]:
        """What is wrong with these figures (negative quotas), as sentences."""
        return [
            f"quota {name} must be 0 (no limit) or more, got {value}"
            for name, value in (
                ("clusters", self.clusters),
                ("tasksets", self.tasksets),
                ("log_bytes", self.log_bytes),
            )
            if value < 0
        ]
