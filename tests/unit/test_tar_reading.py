"""The fast tar reader gives what `tarfile` gives, or leaves the stream to it."""

from __future__ import annotations

import io
import tarfile

import pytest

from normalizer.tar_reading import BLOCK, tar_files, tarfile_files


def tar_stream(
    entries: list[tuple[str, bytes | None]], tar_format: int = tarfile.PAX_FORMAT
) -> bytes:
    """A tar stream of files (bytes) and directories (None), in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as target:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                target.addfile(info)
            else:
                info.size = len(data)
                target.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


LONG_NAME = "chart/templates/" + "deeply/" * 20 + "configmap.yaml"
ENTRIES: list[tuple[str, bytes | None]] = [
    ("chart/", None),
    ("chart/Chart.yaml", b"apiVersion: v2\nname: chart\nversion: 0.1.0\n"),
    ("chart/values.yaml", b""),
    ("chart/templates/big.yaml", b"x" * (3 * BLOCK + 7)),
    ("chart/templates/exact.yaml", b"y" * BLOCK),
    (LONG_NAME, b"kind: ConfigMap\n"),
    ("chart/files/caf\u00e9.txt", "caf\u00e9\n".encode()),
    ("chart/Chart.yaml", b"apiVersion: v2\nname: chart\nversion: 0.2.0\n"),
]


@pytest.mark.parametrize(
    "tar_format",
    [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT],
    ids=["pax", "gnu", "ustar"],
)
def test_files_names_and_order_are_tarfiles_in_every_format_charts_use(tar_format: int) -> None:
    entries = ENTRIES
    if tar_format == tarfile.USTAR_FORMAT:  # a name split into a prefix, at most 255 long
        entries = [
            (name if len(name) <= 100 else "chart/" + "d" * 90 + "/templates/configmap.yaml", d)
            for name, d in ENTRIES
            if not name.endswith(".txt")
        ]
    stream = tar_stream(entries, tar_format)
    read = tar_files(stream)
    assert read == tarfile_files(stream)
    assert read is not None
    assert len(read) == len(entries) - 1  # the directory is no file
    assert [name for name, _ in read].count("chart/Chart.yaml") == 2


def test_what_follows_the_end_of_archive_block_is_not_read() -> None:
    stream = tar_stream(ENTRIES[:3])
    more = tar_stream([("chart/late.yaml", b"late")])
    combined = stream + more
    assert tar_files(combined) == tarfile_files(combined)
    assert "chart/late.yaml" not in dict(tar_files(combined) or [])


def test_a_stream_of_one_zero_block_holds_no_file() -> None:
    assert tar_files(bytes(BLOCK)) == [] == tarfile_files(bytes(BLOCK))


def with_link() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as target:
        info = tarfile.TarInfo("chart/link.yaml")
        info.type = tarfile.SYMTYPE
        info.linkname = "Chart.yaml"
        target.addfile(info)
    return buffer.getvalue()


def with_bad_checksum() -> bytes:
    stream = bytearray(tar_stream(ENTRIES[:2]))
    stream[0] ^= 0x01  # the first name's first byte, not counted in the stored checksum
    return bytes(stream)


def with_global_header() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "x"}
    ) as target:
        info = tarfile.TarInfo("chart/Chart.yaml")
        target.addfile(info, io.BytesIO(b""))
    return buffer.getvalue()


def with_latin1_name() -> bytes:
    stream = bytearray(tar_stream([("chart/cafe.txt", b"")], tarfile.USTAR_FORMAT))
    stream[9] = 0xE9  # "chart/caf\xe9.txt": not UTF-8
    checksum = sum(stream[:BLOCK]) - sum(stream[148:156]) + 8 * 0x20
    stream[148:156] = f"{checksum:06o}\0 ".encode()
    return bytes(stream)


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(b"", id="empty"),
        pytest.param(tar_stream(ENTRIES)[: BLOCK + 100], id="cut-in-a-file"),
        pytest.param(tar_stream(ENTRIES)[:300], id="cut-in-a-header"),
        pytest.param(with_link(), id="symlink"),
        pytest.param(with_bad_checksum(), id="bad-checksum"),
        pytest.param(with_global_header(), id="global-pax-header"),
        pytest.param(with_latin1_name(), id="name-not-utf8"),
    ],
)
def test_what_it_does_not_read_is_left_to_tarfile(stream: bytes) -> None:
    assert tar_files(stream) is None
