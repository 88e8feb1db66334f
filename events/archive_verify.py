"""`fleetbus events verify`: check the whole audit trail, archive and live log, end to end.

Every segment is read and checked in order (`events.archive.ChainVerifier`), then every
`EventsArchived` the live log holds, and where the live log starts. The report names the
first segment and sequence where the trail breaks.
"""

from __future__ import annotations

from events.archive import ChainReport, ChainVerifier
from events.archive_store import ArchiveStore
from events.port import JetStreamPort
from events.store import EventStore
from events.streams import EVENTS_STREAM
from events.subjects import ARCHIVE_EVENTS_SUBJECT

PAGE = 256


async def verify_trail(store: EventStore) -> ChainReport:
    """Verify the archive of `store`'s EVENTS and its link to the live log."""
    archive = ArchiveStore(store.api)
    verifier = ChainVerifier(decoder=store.decoder)
    for header in await archive.listing():
        verifier.add(header, await archive.payload(header), await archive.stored_index(header))
        if verifier.report.broken is not None:
            break
    info = await store.stream_info(EVENTS_STREAM)
    state = info["state"]
    first, last, messages = int(state["first_seq"]), int(state["last_seq"]), int(state["messages"])
    if verifier.report.broken is None and messages:
        port = JetStreamPort(store.api)
        seq = first
        while True:
            page = await port.messages_from(EVENTS_STREAM, ARCHIVE_EVENTS_SUBJECT, seq, PAGE)
            for reply in page:
                found = int(reply.headers.get("Nats-Sequence", "0"))
                verifier.note_claim(found, reply.data)
                seq = found + 1
            if len(page) < PAGE:
                break
    return verifier.finish(first, last, messages)
