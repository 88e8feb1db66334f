"""What the scheduler's log names when one of its task groups ends."""

from __future__ import annotations

from events.errors import EventLogUnavailable
from scheduler.service import first_cause


def test_the_cause_named_is_the_error_inside_nested_task_groups() -> None:
    cause = EventLogUnavailable("no answer from JetStream for fleet.desired.sim-497.status-board")
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [cause, ValueError("later")])])
    assert first_cause(nested) is cause
    assert str(first_cause(nested)).startswith("no answer from JetStream")


def test_an_error_that_is_not_a_group_is_its_own_cause() -> None:
    cause = EventLogUnavailable("gone")
    assert first_cause(cause) is cause
