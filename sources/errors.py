"""Why fetching a source failed, in words for the person who configured it.

`SourceError` is the root. Each kind says what to do about it: the reference itself is wrong
(`InvalidSourceReference`), the hub may not contact its host (`HostNotAllowed`), the source is
over a limit (`SourceTooLarge`, `SourceTimedOut`), it cannot be reached or read
(`SourceUnreachable`), or what it holds refers outside itself (`SourceEscapes`). Messages never
carry credentials: Helm's and git's own messages are scrubbed of them before they get here.
"""

from __future__ import annotations

from typing import Literal

from taskset.errors import FleetbusError

Stage = Literal["fetch", "limits", "render", "publish"]


class SourceError(FleetbusError):
    """Root of every error raised by `sources`."""

    stage: Stage = "fetch"
    """Where it failed, as `SourceFailed.stage` records it."""


class InvalidSourceReference(SourceError):
    """The reference is malformed: a bad URL, a missing chart name, a path leaving the repo."""


class HostNotAllowed(SourceError):
    """The source (or something it points at) is on a host the hub is not configured to
    contact."""

    stage: Stage = "limits"


class SourceTooLarge(SourceError):
    """The fetched source is over a size or file-count limit."""

    stage: Stage = "limits"


class SourceTimedOut(SourceError):
    """Fetching took longer than the time limit."""

    stage: Stage = "limits"


class SourceUnreachable(SourceError):
    """The repository, registry or Git server could not be reached, or refused the request."""


class SourceEscapes(SourceError):
    """Something in the source refers outside it (a symbolic link, a `file://` dependency)."""

    stage: Stage = "limits"


class CredentialsNotFound(SourceError):
    """A source names credentials the hub does not hold."""


class SourceNotFound(SourceError):
    """No standing source of that name."""


class SourceDoesNotRender(SourceError):
    """What the source holds was fetched but does not normalize (a broken chart or overlay)."""

    stage: Stage = "render"
