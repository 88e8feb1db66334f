"""Running a hypothesis fuzz target a fixed number of times, seeded, with a per-case deadline.

Each fuzz test names its seed and case count in its id; `run_fuzz` runs exactly that many
generated cases (hypothesis' generate phase, then shrinking if one fails), with no example
database (nothing is remembered between runs: the seed alone repeats a run), and fails any case
that takes longer than the deadline — a hang is a failure like a crash.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

T = TypeVar("T")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "events"


class CaseHung(AssertionError):
    """A fuzz case used more CPU than any input may: a hang, stopped while it happened."""


@contextlib.contextmanager
def cpu_limit(seconds: float) -> Iterator[None]:
    """Interrupt the code inside if it burns `seconds` of CPU time (an endless loop).

    CPU time (SIGVTALRM) rather than wall time: SIGALRM belongs to pytest-timeout, and a loaded
    machine must not turn a slow case into a false hang.
    """

    def expired(signum: int, frame: object) -> None:
        raise CaseHung(f"a case used more than {seconds}s of CPU: it hangs")

    previous = signal.signal(signal.SIGVTALRM, expired)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


def run_fuzz(
    strategy: st.SearchStrategy[T],
    target: Callable[[T], None],
    *,
    cases: int,
    fuzz_seed: int,
    deadline_ms: int = 2000,
    cpu_limit_s: float = 10.0,
) -> int:
    """Feed `cases` generated inputs to `target`; returns how many it ran.

    A case fails if it raises, if it takes longer than `deadline_ms` (wall time, checked by
    hypothesis after it returns), or if it burns `cpu_limit_s` of CPU (interrupted: a hang).
    """
    ran = 0

    @seed(fuzz_seed)
    @settings(
        max_examples=cases,
        deadline=timedelta(milliseconds=deadline_ms),
        database=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(strategy)
    def case(value: T) -> None:
        nonlocal ran
        ran += 1
        with cpu_limit(cpu_limit_s):
            target(value)

    case()
    return ran


JSON_SCALARS: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)

json_values: st.SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def deeply_nested(draw: st.DrawFn, documents: list[dict[str, Any]]) -> bytes:
    """A valid document with one field nested hundreds to tens of thousands of levels deep."""
    document = json.dumps(draw(st.sampled_from(documents))).encode()
    depth = draw(st.integers(100, 20_000))
    opener, closer = draw(st.sampled_from(((b"[", b"]"), (b'{"a":', b"}"))))
    nested = (
        opener * depth + b"1" + closer * depth
        if opener == b'{"a":'
        else opener * depth + closer * depth
    )
    return document[:-1] + b', "nested": ' + nested + b"}"


def fixture_documents() -> list[dict[str, Any]]:
    """Every stored event fixture as a dict: valid events to mutate."""
    return [json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))]


@st.composite
def mutated_document(draw: st.DrawFn, documents: list[dict[str, Any]]) -> dict[str, Any]:
    """A valid document with 1-4 fields dropped, replaced by any JSON value, or added."""
    document = dict(draw(st.sampled_from(documents)))
    for _ in range(draw(st.integers(1, 4))):
        keys = sorted(document)
        action = draw(st.sampled_from(("drop", "replace", "add")))
        if action == "drop" and keys:
            document.pop(draw(st.sampled_from(keys)))
        elif action == "replace" and keys:
            document[draw(st.sampled_from(keys))] = draw(json_values)
        else:
            document[draw(st.text(max_size=12))] = draw(json_values)
    return document


@st.composite
def mutated_bytes(draw: st.DrawFn, samples: list[bytes]) -> bytes:
    """Valid bytes with 1-8 bytes flipped, inserted or deleted, or cut short."""
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(("flip", "insert", "delete", "truncate")))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del data[at]
        else:
            del data[at:]
    return bytes(data)
