"""An edge's data keys: the keys of its own cluster, received from the hub, in memory only.

An edge never seals; it opens the ClusterTasks the hub sealed for it. Its keys are fetched
over its mutually authenticated link when an envelope names one it does not hold, and are
never written to disk.
"""

from __future__ import annotations

from sealing.envelope import scope_of_key
from sealing.errors import KeyUnavailable, SealingError


class KeyCache:
    def __init__(self, scope: str) -> None:
        self.scope = scope
        self._keys: dict[str, bytes] = {}

    def add(self, key_id: str, key: bytes) -> None:
        if scope_of_key(key_id) != self.scope:
            raise SealingError(f"data key {key_id} is not a key of {self.scope}")
        self._keys[key_id] = key

    def __contains__(self, key_id: str) -> bool:
        return key_id in self._keys

    def active_key(self, scope: str) -> tuple[str, bytes]:
        raise SealingError("an edge opens envelopes; it never seals")

    def key(self, key_id: str) -> bytes:
        key = self._keys.get(key_id)
        if key is None:
            raise KeyUnavailable(key_id, f"this edge ({self.scope}) has not received it")
        return key
