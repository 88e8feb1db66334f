"""Records of the durables moved off a node, as kept in stream DURABLE_MOVES."""

from __future__ import annotations

import pytest

from scheduler.durable_moves import MOVES_PREFIX, decode_moves, encode_moves, moves_subject


def test_a_record_reads_back_as_the_node_and_its_clusters() -> None:
    assert decode_moves(encode_moves("hub-2", ["c-2", "c-1", "c-2"])) == ("hub-2", {"c-1", "c-2"})


@pytest.mark.parametrize("data", [b"", b"[]", b'{"node": "hub-2"}', b'{"node": 2, "clusters": []}'])
def test_anything_else_is_refused_as_not_a_record(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a record of moved durables"):
        decode_moves(data)


def test_each_node_has_its_own_subject_whatever_its_name_holds() -> None:
    names = ["hub-1", "hub-2", "nats-0.nats.svc", "node with spaces", "*", ">"]
    subjects = [moves_subject(name) for name in names]
    assert len(set(subjects)) == len(names)
    for subject in subjects:
        token = subject.removeprefix(f"{MOVES_PREFIX}.")
        assert token, subject
        assert all(c.isascii() and (c.isalnum() or c in "-_") for c in token), subject
