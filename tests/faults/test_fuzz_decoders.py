"""R5 fuzzing: the decoders that read bytes off the bus never crash and never hang.

The event decoder reads every message of EVENTS and REPORTS (REPORTS come from the edges: an
edge controls what it writes into its own outbox). The taskset wire codecs read every snapshot
body and every DESIRED message. Whatever the bytes, each either returns a valid value or raises
its one documented error (`UndecodableEvent`, `CorruptPayload`) — never another exception,
never a hang. Inputs: random bytes, random JSON, event envelopes with random fields, stored
fixtures with fields dropped, replaced or added, and fixtures with bytes flipped, inserted,
deleted or cut off.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from hypothesis import strategies as st

from events.catalog import EVENT_TYPES, Event
from events.codec import EventDecoder, encode_event
from events.errors import UndecodableEvent
from taskset.codec import CorruptPayload, decode_cluster_task, decode_taskset
from taskset.model import ClusterTask, Taskset
from tests.faults.fuzzing import (
    FIXTURES,
    deeply_nested,
    fixture_documents,
    json_values,
    mutated_bytes,
    mutated_document,
    run_fuzz,
)
from tests.faults.harness import LONG, record_figures

DOCUMENTS = fixture_documents()
FIXTURE_BYTES = [path.read_bytes() for path in sorted(FIXTURES.glob("*.json"))]


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


envelopes = st.fixed_dictionaries(
    {
        "type": st.sampled_from(sorted(EVENT_TYPES)) | st.text(max_size=20),
        "version": st.integers(-3, 3) | st.integers(min_value=-(2**70), max_value=2**70),
    },
    optional={
        "id": json_values,
        "occurred_at": json_values | st.datetimes().map(lambda t: t.isoformat()),
        "actor": json_values,
        "cluster": json_values,
        "taskset": json_values,
        "labels": json_values,
        "body": json_values,
    },
).map(as_json)

event_inputs = st.one_of(
    st.binary(max_size=1024),
    json_values.map(as_json),
    envelopes,
    mutated_document(DOCUMENTS).map(as_json),
    mutated_bytes(FIXTURE_BYTES),
    deeply_nested(DOCUMENTS),
)

DECODER = EventDecoder()


def decoded(data: bytes) -> Event | UndecodableEvent:
    try:
        return DECODER.decode(data, seq=1, subject="fleet.evt.fuzz.x")
    except UndecodableEvent as refused:
        return refused


def decode_or_refuse(data: bytes) -> None:
    outcome = decoded(data)
    if isinstance(outcome, UndecodableEvent):
        assert outcome.seq == 1
        assert "is not a valid event" in str(outcome)
        return
    assert isinstance(outcome, Event)
    assert DECODER.decode(encode_event(outcome)) == outcome


@pytest.mark.parametrize(
    ("fuzz_seed", "cases"),
    [
        pytest.param(20261126, 1_500, id="seed=20261126-cases=1500"),
        pytest.param(77, 10_000, id="seed=77-cases=10000", marks=LONG),
    ],
)
def test_the_event_decoder_returns_an_event_or_refuses_whatever_the_bytes(
    fuzz_seed: int, cases: int
) -> None:
    ran = run_fuzz(event_inputs, decode_or_refuse, cases=cases, fuzz_seed=fuzz_seed)
    assert ran >= cases
    record_figures("R5 fuzz event decoder", seed=fuzz_seed, cases=ran, crashes=0, hangs=0)


taskset_documents = st.fixed_dictionaries(
    {"name": json_values | st.text(max_size=10)},
    optional={
        "namespace": json_values,
        "install": st.lists(
            st.fixed_dictionaries({"object": json_values}, optional={"wait": json_values}),
            max_size=3,
        )
        | json_values,
        "init": json_values,
        "driftPolicy": st.sampled_from(("correct", "report", "ignore")) | json_values,
        "source": json_values,
    },
)
cluster_task_documents = st.fixed_dictionaries(
    {
        "cluster": json_values | st.text(max_size=10),
        "tasksetName": json_values | st.text(max_size=10),
        "version": json_values | st.integers(),
        "generation": json_values | st.integers(),
        "digest": json_values | st.text(max_size=10),
    },
    optional={"taskset": taskset_documents | json_values, "removed": json_values},
)
wire_inputs = st.one_of(
    st.binary(max_size=512),
    st.binary(max_size=512).map(zlib.compress),
    json_values.map(lambda value: zlib.compress(as_json(value))),
    taskset_documents.map(lambda value: zlib.compress(as_json(value))),
    cluster_task_documents.map(lambda value: zlib.compress(as_json(value))),
    cluster_task_documents.map(as_json),
    deeply_nested(DOCUMENTS).map(zlib.compress),
)


def decode_wire_or_refuse(data: bytes) -> None:
    for decode, kind in ((decode_taskset, Taskset), (decode_cluster_task, ClusterTask)):
        try:
            outcome: object = decode(data)
        except CorruptPayload as refused:
            outcome = refused
        if isinstance(outcome, CorruptPayload):
            assert str(outcome).startswith("not a")
        else:
            assert isinstance(outcome, kind)


@pytest.mark.parametrize(
    ("fuzz_seed", "cases"),
    [
        pytest.param(1126, 600, id="seed=1126-cases=600"),
        pytest.param(78, 10_000, id="seed=78-cases=10000", marks=LONG),
    ],
)
def test_taskset_and_cluster_task_wire_forms_decode_or_refuse_whatever_the_bytes(
    fuzz_seed: int, cases: int
) -> None:
    ran = run_fuzz(wire_inputs, decode_wire_or_refuse, cases=cases, fuzz_seed=fuzz_seed)
    assert ran >= cases
    record_figures("R5 fuzz taskset wire codecs", seed=fuzz_seed, cases=ran, crashes=0, hangs=0)
