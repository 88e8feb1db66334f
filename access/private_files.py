"""Files only their owner may read, written whole or not at all.

Keys, the hub's nats-server config (it holds passwords), service secrets and API tokens all go
through `write_private`: mode 0600 from the first byte, fsynced, then renamed into place, so a
crash never leaves half a secret or a world-readable one.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, atomically (no half-written secrets)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
