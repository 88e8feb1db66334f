"""Archive segments, their hash chain and the retention window, as pure functions."""

from __future__ import annotations

import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from events.archive import (
    GENESIS_HASH,
    ArchivedMessage,
    ChainVerifier,
    EncodedSegment,
    SegmentBody,
    SegmentCorrupt,
    SegmentHeader,
    content_hash,
    decode_segment,
    decode_subject_index,
    encode_segment,
    encode_subject_index,
    micros_of,
    segment_cut,
    subjects_of,
)
from events.archive_store import subject_matches
from events.catalog import EventsArchived
from events.codec import encode_event
from events.retention import RetentionInvalid, RetentionPolicy, archive_boundary
from events.subjects import ARCHIVE_EVENTS_SUBJECT
from fleetbus.commands.events import verification_text

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def message(seq: int, subject: str = "fleet.evt.cluster.a", data: bytes = b"{}") -> ArchivedMessage:
    return ArchivedMessage(seq, subject, micros_of(T0 + timedelta(seconds=seq)), data, None)


def record(segment: EncodedSegment, seq: int) -> ArchivedMessage:
    header = segment.header
    event = EventsArchived(
        id=f"01a0f5b1-0000-7000-8000-{seq:012d}",
        occurred_at=T0,
        actor="archiver",
        segment=header.index,
        from_seq=header.from_seq,
        to_seq=header.to_seq,
        segment_hash=header.hash,
        previous_hash=header.prev_hash,
    )
    return message(seq, ARCHIVE_EVENTS_SUBJECT, encode_event(event))


def chain(count: int = 3, per: int = 4) -> list[EncodedSegment]:
    """`count` segments of `per` events each; each segment after the first starts with the
    record of the one before, as the archiver leaves them."""
    segments: list[EncodedSegment] = []
    seq = 1
    for index in range(1, count + 1):
        messages: list[ArchivedMessage] = []
        for _ in range(per):
            if segments and not messages:
                messages.append(record(segments[-1], seq))
            else:
                messages.append(message(seq, data=b'{"n":%d}' % seq))
            seq += 1
        previous = segments[-1].header.hash if segments else GENESIS_HASH
        segments.append(encode_segment(index, messages[0].seq, seq - 1, previous, messages))
    return segments


def verified(segments: list[EncodedSegment], live: list[ArchivedMessage]) -> ChainVerifier:
    verifier = ChainVerifier()
    for segment in segments:
        verifier.add(segment.header, segment.payload)
    for entry in live:
        if entry.subject == ARCHIVE_EVENTS_SUBJECT:
            verifier.note_claim(entry.seq, entry.data)
    return verifier


def finish(
    segments: list[EncodedSegment],
    live_first: int | None = None,
    recorded: EncodedSegment | None = None,
) -> ChainVerifier:
    """Verify `segments`, then a live log whose first event records `recorded` (the newest
    segment as the archiver wrote it; by default the newest of `segments`)."""
    tail = segments[-1]
    first = tail.header.to_seq + 1 if live_first is None else live_first
    verifier = verified(segments, [record(recorded or tail, first)])
    verifier.finish(first, first + 5, 6)
    return verifier


def tampered(segment: EncodedSegment, *, rehash: bool) -> EncodedSegment:
    """The segment with one event's bytes changed; `rehash` also fixes its own hash header
    (what someone who knows the format would do)."""
    body = msgspec.msgpack.decode(zlib.decompress(segment.payload), type=SegmentBody)
    changed = [*body.messages]
    changed[-1] = msgspec.structs.replace(changed[-1], data=b'{"n":"forged"}')
    raw = msgspec.msgpack.encode(msgspec.structs.replace(body, messages=changed))
    header = replace(segment.header, hash=content_hash(raw)) if rehash else segment.header
    return EncodedSegment(header, zlib.compress(raw))


def test_a_segment_decodes_to_what_was_archived_and_its_hash_covers_the_previous_one() -> None:
    messages = [message(5), message(7, "fleet.evt.taskset.web")]
    segment = encode_segment(2, 5, 8, "sha256:" + "1" * 64, messages)
    body = decode_segment(segment.header, segment.payload)
    assert body.messages == messages
    assert (segment.header.from_seq, segment.header.to_seq, segment.header.events) == (5, 8, 2)
    assert segment.header.first_time == T0 + timedelta(seconds=5)
    assert SegmentHeader.from_headers(segment.header.headers(), 9) == replace(
        segment.header, stored_bytes=9
    )
    other = encode_segment(2, 5, 8, "sha256:" + "2" * 64, messages)
    assert other.header.hash != segment.header.hash
    assert len(segment.payload) < segment.header.raw_bytes or segment.header.raw_bytes < 200


def test_a_changed_segment_fails_its_own_hash() -> None:
    segment = chain(1)[0]
    with pytest.raises(SegmentCorrupt, match=r"segment 1 \(from sequence 1\): its content hashes"):
        decode_segment(segment.header, tampered(segment, rehash=False).payload)
    with pytest.raises(SegmentCorrupt, match="does not decompress"):
        decode_segment(segment.header, b"not zlib")


def test_an_intact_chain_verifies_up_to_the_live_log() -> None:
    segments = chain()
    report = finish(segments).report
    assert report.ok, report.broken
    assert (report.segments, report.archived_to, report.archived_events) == (3, 12, 12)
    assert report.tail_hash == segments[-1].header.hash


def test_a_tampered_segment_is_named_with_its_first_sequence() -> None:
    segments = chain()
    plain = finish([segments[0], tampered(segments[1], rehash=False), segments[2]]).report
    assert plain.broken is not None
    assert (plain.broken.segment, plain.broken.seq) == (2, 5)
    assert "hashes to" in plain.broken.reason

    # With its own hash header rewritten, the next segment's record of it still disagrees.
    sneaky = finish([segments[0], tampered(segments[1], rehash=True), segments[2]]).report
    assert sneaky.broken is not None
    assert (sneaky.broken.segment, sneaky.broken.seq) == (2, 5)
    assert "segment 3 recorded" in sneaky.broken.reason

    # The newest segment is held to the live log's record of it.
    last = finish([*segments[:2], tampered(segments[2], rehash=True)], recorded=segments[2]).report
    assert last.broken is not None
    assert last.broken.segment == 3
    assert "EventsArchived at sequence 13" in last.broken.reason


def test_gaps_overlaps_missing_segments_and_a_missing_link_are_named() -> None:
    segments = chain()
    missing = finish([segments[0], segments[2]]).report
    assert missing.broken is not None
    assert (missing.broken.segment, missing.broken.reason) == (3, "segment 2 is missing")

    gap = finish(segments, live_first=15).report
    assert gap.broken is not None
    assert (gap.broken.segment, gap.broken.seq) == (0, 13)
    assert "13..14 are neither archived nor live" in gap.broken.reason

    unlinked = ChainVerifier()
    for segment in segments:
        unlinked.add(segment.header, segment.payload)
    report = unlinked.finish(13, 20, 8)
    assert report.broken is not None
    assert report.broken.segment == 3
    assert "no EventsArchived records segment 3" in report.broken.reason

    lost = ChainVerifier()
    lost.add(segments[0].header, None)
    assert lost.report.broken is not None
    assert lost.report.broken.reason == "its message is missing"

    nothing = ChainVerifier().finish(4, 9, 6)
    assert nothing.broken is not None
    assert "1..3 are neither archived nor live" in nothing.broken.reason
    assert ChainVerifier().finish(1, 9, 9).ok


def test_segments_are_cut_by_events_and_bytes_and_never_empty() -> None:
    sizes = [(seq, 100) for seq in range(1, 50)]
    assert segment_cut(sizes, max_events=10, max_raw_bytes=10_000) == 10
    assert segment_cut(sizes, max_events=100, max_raw_bytes=350) == 3
    assert segment_cut([(1, 5000), (2, 1)], max_events=10, max_raw_bytes=100) == 1


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("age=90d", RetentionPolicy(max_age=timedelta(days=90))),
        ("events=5000000", RetentionPolicy(max_events=5_000_000)),
        ("bytes=20GiB, age=12h", RetentionPolicy(max_age=timedelta(hours=12), max_bytes=20 << 30)),
        ("bytes=2097152", RetentionPolicy(max_bytes=2 << 20)),
    ],
)
def test_retention_limits_parse(text: str, policy: RetentionPolicy) -> None:
    assert RetentionPolicy.parse(text) == policy
    assert policy.enabled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("90d", "'90d' is not a limit; write name=value"),
        ("days=90", "unknown limit 'days'"),
        ("age=90", "age=90: write a duration like 90d"),
        ("age=30s", "age=30s: keep at least 1m"),
        ("events=-5", "events=-5: write a whole number"),
        ("events=10", "events=10: keep at least 100 events"),
        ("bytes=20GB", "bytes=20GB: write a size like 20GiB"),
        ("bytes=1KiB", "bytes=1KiB: keep at least 1MiB"),
        ("age=1d,age=2d", "the limit age is given twice"),
        ("age=", "'age=' is not a limit"),
    ],
)
def test_bad_retention_limits_are_refused_naming_the_part(text: str, message: str) -> None:
    with pytest.raises(RetentionInvalid, match=message.replace("(", r"\(")):
        RetentionPolicy.parse(text)


def test_the_window_cut_ends_at_the_first_event_every_limit_keeps() -> None:
    now = T0 + timedelta(days=10)
    live = [(seq, T0 + timedelta(days=seq), 100) for seq in range(1, 11)]  # days 1..10

    def boundary(policy: RetentionPolicy) -> int:
        return archive_boundary(policy, now=now, last_seq=10, live_bytes=1000, oldest_first=live)

    assert boundary(RetentionPolicy()) == 0
    assert boundary(RetentionPolicy(max_events=4)) == 6
    assert boundary(RetentionPolicy(max_age=timedelta(days=3))) == 6  # day 7 is 3 days old
    assert boundary(RetentionPolicy(max_bytes=350)) == 7  # 300 bytes stay
    assert boundary(RetentionPolicy(max_events=8, max_age=timedelta(days=5))) == 4
    assert boundary(RetentionPolicy(max_events=100)) == 0


def test_subject_filters_match_as_nats_matches_them() -> None:
    assert subject_matches("fleet.evt.taskset.>", "fleet.evt.taskset.web")
    assert subject_matches("fleet.evt.*.web", "fleet.evt.taskset.web")
    assert subject_matches("fleet.evt.cluster.a", "fleet.evt.cluster.a")
    assert not subject_matches("fleet.evt.taskset.>", "fleet.evt.taskset")
    assert not subject_matches("fleet.evt.cluster.a", "fleet.evt.cluster.ab")
    assert not subject_matches("fleet.evt.*", "fleet.evt.cluster.a")


def test_a_subject_index_that_leaves_out_a_subject_breaks_the_trail() -> None:
    segments = chain()
    body = decode_segment(segments[0].header, segments[0].payload)
    assert decode_subject_index(encode_subject_index(subjects_of(body))) == subjects_of(body)
    assert decode_subject_index(b"garbage") is None
    honest = ChainVerifier()
    honest.add(segments[0].header, segments[0].payload, subjects_of(body))
    assert honest.report.broken is None
    lying = ChainVerifier()
    lying.add(segments[0].header, segments[0].payload, frozenset({"fleet.evt.cluster.b"}))
    assert lying.report.broken is not None
    assert (lying.report.broken.segment, lying.report.broken.seq) == (1, 1)
    assert "subject index" in lying.report.broken.reason


def test_events_verify_prints_the_trail_or_where_it_breaks() -> None:
    segments = chain()
    good = finish(segments).report.to_json()
    assert verification_text(good) == (
        "verified: 3 archive segment(s), events 1..12 (12 events), chain ends at "
        f"{segments[-1].header.hash}; live log 13..18"
    )
    bad = finish([segments[0], tampered(segments[1], rehash=True), segments[2]]).report
    text = verification_text(bad.to_json())
    assert text.startswith("BROKEN at segment 2, sequence 5: it hashes to ")
    assert "read until then: 2 archive segment(s), events 1..8" in text
    fresh = ChainVerifier().finish(1, 7, 7).to_json()
    assert verification_text(fresh) == "verified: no archive segments; live log 1..7"
