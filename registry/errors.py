"""Why a command was refused, in the write side's own words.

`RegistryError` is the root; its five kinds say what went wrong without saying how a caller
shows it: the command makes no sense (`InvalidCommand`), names something that does not exist
(`UnknownAggregate`), contradicts the aggregate's state (`StateConflict`), is too large for
one event (`CommandTooLarge`), or the aggregate's history could not be read whole
(`HistoryUnavailable`). The HTTP API maps each kind to a status in `api.errors`; the CLI prints
the sentence. `detail` carries the figures a program may want (sizes, limits).
"""

from __future__ import annotations

from typing import Any

from taskset.errors import FleetbusError


class RegistryError(FleetbusError):
    """Root of the errors the write side raises on purpose."""

    def __init__(self, message: str, detail: Any = None) -> None:
        self.detail = detail
        super().__init__(message)


class InvalidCommand(RegistryError):
    """The command is well-formed but asks for something that makes no sense."""


class UnknownAggregate(RegistryError):
    """The command names a taskset, cluster or override the log has never seen (or forgot)."""


class StateConflict(RegistryError):
    """The command contradicts the aggregate's current state (exists already, retired, ...)."""


class CommandTooLarge(RegistryError):
    """The events the command decides would not fit the log's limits."""


class HistoryUnavailable(RegistryError):
    """The aggregate's history could not be read whole; deciding on part of it would be wrong."""


class TasksetTooLarge(CommandTooLarge):
    def __init__(self, name: str, body_size: int, event_size: int, limit: int) -> None:
        self.body_size = body_size
        self.event_size = event_size
        self.limit = limit
        super().__init__(
            f"taskset {name} is {body_size:,} bytes compressed ({event_size:,} bytes as an "
            f"event), over the limit of {limit:,} bytes ({limit / 1024 / 1024:g} MiB) for one "
            "snapshot; split it into several tasksets",
            {"body_size": body_size, "event_size": event_size, "limit": limit},
        )


class TasksetNotFound(UnknownAggregate):
    pass


class TasksetNotPublished(UnknownAggregate):
    pass


class TasksetAlreadyRetired(StateConflict):
    pass


class ClusterNotFound(UnknownAggregate):
    pass


class ClusterAlreadyRegistered(StateConflict):
    pass


class OverrideNotFound(UnknownAggregate):
    pass


class OverrideRefused(InvalidCommand):
    pass


class RolloutNotHalted(StateConflict):
    pass


class BlueprintNotFound(UnknownAggregate):
    pass


class BlueprintRefused(InvalidCommand):
    """The blueprint as written cannot be published; the message names the entry or cycle."""


class ProjectNotFound(UnknownAggregate):
    pass


class ProjectExists(StateConflict):
    pass


class QuotaExceeded(RegistryError):
    """Creating this would take a project past one of its quotas; nothing was written."""

    def __init__(self, project: str, quota: str, limit: int, used: int, adding: int) -> None:
        self.project = project
        self.quota = quota
        self.limit = limit
        what = {"clusters": "clusters", "tasksets": "tasksets", "log_bytes": "bytes of log"}
        flag = "--" + quota.replace("_", "-")
        super().__init__(
            f"project {project} has reached its quota {quota}: {used:,} of {limit:,} "
            f"{what.get(quota, quota)} used, adding {adding:,} would exceed it; remove some, or "
            f"ask an org admin to raise it (`fleetbus project quota {project} {flag} N`)",
            {"project": project, "quota": quota, "limit": limit, "used": used, "adding": adding},
        )
