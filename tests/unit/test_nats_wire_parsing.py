"""The event store's own parsing of NATS wire details: header blocks, JetStream replies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NatsPyClient

from events.connection import parse_header_lines
from events.replay import _ack_position, _from_nanos

HEADER_BLOCKS = [
    b"Nats-Msg-Id: 01a219dd-dbad-7217-8d9a-cc6d0fafef7f\r\n\r\n",
    b"Nats-Stream: EVENTS\r\nNats-Subject: fleet.evt.cluster.c1\r\nNats-Sequence: 200000\r\n"
    b"Nats-Time-Stamp: 2026-11-26T21:58:19.834068762Z\r\n\r\n",
    b"Name:Value\r\nSpaced :  padded value \t\r\n\r\n",
    b"Bad Name: skipped\r\nGood: kept\r\n\r\n",
    b"no colon here\r\nX-Unicode: caf\xc3\xa9\r\n\r\n",
    b"X-Broken: \xff\xfe\r\nDup: first\r\nDup: second\r\n\r\n",
    b"Empty:\r\n:no name\r\n\r\n",
    b"Ctl\x01Name: odd but accepted\r\nTab\tName: skipped\r\n\r\n",
]


@pytest.mark.parametrize("raw", HEADER_BLOCKS)
def test_header_blocks_parse_exactly_as_nats_py_parses_them(raw: bytes) -> None:
    assert parse_header_lines(raw) == NatsPyClient._parse_header_lines(raw)


def test_names_that_are_not_tokens_are_skipped_and_values_are_trimmed() -> None:
    parsed = parse_header_lines(b"Bad Name: x\r\nGood:  y  \r\n\r\n")
    assert parsed == {"Good": "y"}


def test_a_reply_subject_gives_the_stream_sequence_and_storage_time() -> None:
    plain = "$JS.ACK.EVENTS.replay-1.1.4711.12.1795730761719813396.0"
    with_domain = "$JS.ACK.hub.ACCHASH.EVENTS.replay-1.1.4711.12.1795730761719813396.0.tok"
    assert _ack_position(plain) == (4711, 1795730761719813396)
    assert _ack_position(with_domain) == (4711, 1795730761719813396)


def test_storage_times_are_rounded_down_to_the_microsecond() -> None:
    moment = _from_nanos(1_795_730_761_719_813_999)
    assert moment == datetime(2026, 11, 26, 22, 6, 1, 719813, tzinfo=UTC)
