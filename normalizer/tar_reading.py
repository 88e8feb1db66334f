"""The regular files of a tar stream, read straight from its 512-byte headers.

A chart archive holds hundreds of small files; Python's `tarfile` builds a `TarInfo` object
for each, through several layers of checks, which costs as much as inflating the archive.
Charts are written by Helm (and by `normalizer.helm.reproducible_archive`) as POSIX ustar with
PAX headers for long names, so this reads that form only: regular files and directories,
ustar name prefixes, PAX `path` and `size` records, GNU long names. Anything else (links,
sparse or multi-volume files, global PAX headers, base-256 sizes, a bad checksum, a cut
stream, names that are not UTF-8) is not read here: `tar_files` returns None and the caller
reads the stream with `tarfile`, which knows every form and names every problem.

What is read matches `tarfile`'s members: the same names in the same order (repeated names
included), each with its bytes. `tests/unit/test_tar_reading.py` compares the two.
"""

from __future__ import annotations

import io
import tarfile

BLOCK = 512
_REGULAR = (b"0", b"\0")
_DIRECTORY = b"5"
_PAX = b"x"
_GNU_LONG_NAME = b"L"
_USTAR = b"ustar\x0000"


def _octal(field: bytes) -> int | None:
    """A header's octal number (NUL or space terminated), or None if it is not one."""
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    try:
        return int(digits, 8)
    except ValueError:
        return None


def _checksum_holds(header: bytes) -> bool:
    stored = _octal(header[148:156])
    # the sum of the header's bytes with the checksum field read as eight spaces
    computed = sum(header) - sum(header[148:156]) + 8 * 0x20
    return stored == computed


def _pax_records(data: bytes) -> dict[bytes, bytes] | None:
    """The records of a PAX extended header (`<length> <key>=<value>\\n`), or None."""
    records: dict[bytes, bytes] = {}
    position = 0
    while position < len(data):
        space = data.find(b" ", position)
        if space < 0:
            return None if data[position:].strip(b"\0") else records
        try:
            length = int(data[position:space])
        except ValueError:
            return None
        end = position + length
        if length <= 0 or end > len(data) or data[end - 1 : end] != b"\n":
            return None
        key, equals, value = data[space + 1 : end - 1].partition(b"=")
        if not equals:
            return None
        records[key] = value
        position = end
    return records


def _name(header: bytes) -> str | None:
    """The name a ustar header gives, its prefix included; None for a prefix field in any
    other format (GNU tar keeps other data there, which `tarfile` would read as a prefix)."""
    name = header[0:100].split(b"\0", 1)[0]
    prefix = header[345:500].split(b"\0", 1)[0]
    if prefix:
        if header[257:265] != _USTAR:
            return None
        name = prefix + b"/" + name
    return name.decode()


def tar_files(stream: bytes) -> list[tuple[str, bytes]] | None:
    """Every regular file of an uncompressed tar stream as (name, bytes), in order, or None
    when the stream uses anything this reader leaves to `tarfile` (see the module docstring).
    """
    view = memoryview(stream)
    files: list[tuple[str, bytes]] = []
    position = 0
    long_name: str | None = None
    pax: dict[bytes, bytes] = {}
    try:
        while True:
            header = stream[position : position + BLOCK]
            if len(header) < BLOCK or not header.strip(b"\0"):
                # the end of the stream, or the end-of-archive block (`tarfile` stops at the
                # first); `tarfile` calls a stream with no member at all an error
                ended = not header.strip(b"\0") and long_name is None and not pax
                return files if ended and (position > 0 or len(header) == BLOCK) else None
            if header[124] & 0x80 or not _checksum_holds(header):
                return None
            size = _octal(header[124:136])
            if size is None:
                return None
            kind = header[156:157]
            data_start = position + BLOCK
            if b"size" in pax:
                size = int(pax[b"size"])
            data_end = data_start + size
            if data_end > len(stream):
                return None
            position = data_start + -(-size // BLOCK) * BLOCK
            if kind == _PAX:
                if pax or long_name is not None:
                    return None
                records = _pax_records(stream[data_start:data_end])
                if records is None or any(
                    key.startswith(b"GNU.sparse") or key == b"hdrcharset" for key in records
                ):
                    return None
                pax = records
                continue
            if kind == _GNU_LONG_NAME:
                if long_name is not None or pax:
                    return None
                long_name = stream[data_start:data_end].split(b"\0", 1)[0].decode()
                continue
            if kind not in _REGULAR and kind != _DIRECTORY:
                return None
            name = pax[b"path"].decode() if b"path" in pax else long_name
            if name is None:
                name = _name(header)
            if name is None:
                return None
            pax, long_name = {}, None
            if kind in _REGULAR:
                if name.endswith("/"):
                    return None  # `tarfile` calls an old-style name ending in "/" a directory
                files.append((name, bytes(view[data_start:data_end])))
    except (UnicodeDecodeError, ValueError):
        return None


def tarfile_files(stream: bytes) -> list[tuple[str, bytes]]:
    """Every regular file of an uncompressed tar stream as (name, bytes), read by `tarfile`:
    what `tar_files` leaves to it, and the reference `tar_files` is compared with."""
    files: list[tuple[str, bytes]] = []
    with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as source:
        for member in source.getmembers():
            handle = source.extractfile(member) if member.isfile() else None
            if handle is not None:
                files.append((member.name, handle.read()))
    return files
