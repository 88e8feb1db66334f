"""Which parts of which events are secret, sealed before they reach the log.

The event store seals every event it appends (`EventStore(sealer=...)`), so no writer can
forget to: a published snapshot's Secret values and sensitive Helm values, an override's
sensitive or marked values and its patches' secret values, a blueprint entry's sensitive
values. What only one cluster gets (an override aimed at one cluster) is sealed with that
cluster's data key, so shredding the key makes it unreadable; everything else with the hub's.

Readers get the events as stored: envelopes stay envelopes (shown masked) until a component
that needs the value (the scheduler, a preview) opens them with `sealing.trees.open_tree`.
Digests are taken from the plaintext before sealing, so publishing the same content twice is
still "unchanged".
"""

from __future__ import annotations

import msgspec

from events.catalog import BlueprintPublished, Event, OverrideSet, TasksetPublished
from sealing.envelope import HUB_SCOPE, DataKeys, cluster_scope
from sealing.trees import seal_patches, seal_sensitive, seal_taskset
from taskset.codec import decode_taskset, encode_taskset


def override_scope(event: OverrideSet) -> str:
    return cluster_scope(event.cluster) if event.cluster else HUB_SCOPE


class EventSealer:
    """Seals the secret parts of events with data keys from `keys` (the hub's keyring)."""

    def __init__(self, keys: DataKeys) -> None:
        self.keys = keys

    def seal(self, event: Event) -> Event:
        match event:
            case TasksetPublished():
                body = encode_taskset(
                    seal_taskset(self.keys, HUB_SCOPE, decode_taskset(event.body))
                )
                return msgspec.structs.replace(
                    event,
                    body=body,
                    body_size=len(body),
                    values=seal_sensitive(self.keys, HUB_SCOPE, event.values),
                )
            case OverrideSet():
                scope = override_scope(event)
                return msgspec.structs.replace(
                    event,
                    values=seal_sensitive(self.keys, scope, event.values, set(event.sensitive)),
                    patches=seal_patches(self.keys, scope, event.patches),
                )
            case BlueprintPublished():
                entries = [
                    msgspec.structs.replace(
                        entry, values=seal_sensitive(self.keys, HUB_SCOPE, entry.values)
                    )
                    if entry.values
                    else entry
                    for entry in event.entries
                ]
                return msgspec.structs.replace(event, entries=entries)
        return event
