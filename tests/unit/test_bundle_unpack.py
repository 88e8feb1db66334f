"""Unpacking the edge bundle the hub sends: where it may go, what it may hold, and its modes."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from access.nats_jwt import credentials_file
from access.pki import CertificateAuthority, cluster_of_certificate
from edge_connector.errors import BundleError
from fleetbus.bundle import EdgeSettings, write_edge_bundle
from fleetbus.bundle_unpack import (
    MAX_MEMBERS,
    STAGING_PREFIX,
    prepare_bundle_dir,
    unpack_bundle,
)
from fleetbus.enrollment import pack

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CA = CertificateAuthority.create(NOW)


def bundle_archive(tmp_path: Path, cluster: str, *, arcname: str | None = None) -> bytes:
    """The .tar.gz the hub answers `POST /api/v1/clusters` with."""
    settings = EdgeSettings(
        cluster=cluster, hub_urls=["tls://hub.example:443"], labels={"env": "prod"}
    )
    root = write_edge_bundle(
        tmp_path / "issued" / cluster,
        settings,
        ca_pem=CA.cert_pem,
        issued=CA.issue_cluster(cluster, NOW),
        credentials=credentials_file("JWT", "SEED"),
    )
    return pack(root, arcname or cluster)


def tree(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_bundle_lands_in_a_new_directory_with_its_key_readable_by_the_owner_only(
    tmp_path: Path,
) -> None:
    out = tmp_path / "bundles" / "alpha"
    bundle = unpack_bundle(bundle_archive(tmp_path, "alpha"), prepare_bundle_dir(out, "alpha"))
    assert bundle.root == out
    assert bundle.cluster == "alpha"
    assert cluster_of_certificate(bundle.cert_file.read_bytes()) == "alpha"
    assert set(tree(out)) == {
        "ca.crt",
        "cluster.crt",
        "cluster.key",
        "cluster.creds",
        "cluster.json",
        "edge.json",
        "leaf.conf",
        "values.yaml",
    }
    assert mode(out / "cluster.key") == 0o600
    assert mode(out / "cluster.creds") == 0o600, "the credentials hold the user's seed"
    assert mode(out / "values.yaml") == 0o600, "the Helm values inline the key"
    assert mode(out) == 0o700
    assert not mode(out / "ca.crt") & 0o022
    assert orjson.loads((out / "cluster.json").read_bytes()) == {
        "name": "alpha",
        "labels": {"env": "prod"},
    }


def test_an_empty_directory_takes_a_bundle(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    target = prepare_bundle_dir(out, "alpha")
    assert not target.created
    unpack_bundle(bundle_archive(tmp_path, "alpha"), target)
    assert (out / "cluster.key").is_file()


def test_a_directory_holding_other_files_is_refused_before_the_hub_is_asked(
    tmp_path: Path,
) -> None:
    out = tmp_path / "home"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match=r"not empty .*other files"):
        prepare_bundle_dir(out, "alpha")
    assert tree(out) == {"notes.txt": b"mine"}


def test_the_bundle_of_another_cluster_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "beta"
    unpack_bundle(bundle_archive(tmp_path, "beta"), prepare_bundle_dir(out, "beta"))
    before = tree(out)
    with pytest.raises(BundleError, match="bundle of cluster beta"):
        prepare_bundle_dir(out, "alpha")
    assert tree(out) == before


def test_an_earlier_bundle_of_the_same_cluster_is_renewed_in_place_keeping_other_files(
    tmp_path: Path,
) -> None:
    out = tmp_path / "alpha"
    unpack_bundle(bundle_archive(tmp_path / "first", "alpha"), prepare_bundle_dir(out, "alpha"))
    old_key = (out / "cluster.key").read_bytes()
    (out / "state").mkdir()
    (out / "state" / "leaf.db").write_bytes(b"jetstream")
    target = prepare_bundle_dir(out, "alpha")
    assert not target.created
    unpack_bundle(bundle_archive(tmp_path / "second", "alpha"), target)
    assert (out / "cluster.key").read_bytes() != old_key
    assert mode(out / "cluster.key") == 0o600
    assert (out / "state" / "leaf.db").read_bytes() == b"jetstream"
    assert not [p for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)]


def test_a_file_where_the_directory_should_be_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(BundleError, match="not a directory"):
        prepare_bundle_dir(out, "alpha")


def test_discarding_removes_a_directory_made_for_the_bundle_but_not_one_that_was_there(
    tmp_path: Path,
) -> None:
    made = prepare_bundle_dir(tmp_path / "made", "alpha")
    made.discard()
    assert not (tmp_path / "made").exists()
    (tmp_path / "there").mkdir()
    prepare_bundle_dir(tmp_path / "there", "alpha").discard()
    assert (tmp_path / "there").is_dir()


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    return info


def top() -> tuple[tarfile.TarInfo, None]:
    return (entry("alpha", tarfile.DIRTYPE), None)


BAD_ARCHIVES: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "parent-path": (lambda _: tar_of(top(), (entry("alpha/../escape"), b"x")), "only files"),
    "absolute-path": (lambda _: tar_of((entry("/tmp/escape"), b"x")), "only files"),
    "other-top-directory": (lambda _: tar_of((entry("beta/ca.crt"), b"x")), "only files"),
    "nested-directory": (lambda _: tar_of(top(), (entry("alpha/sub/x"), b"x")), "only files"),
    "symlink": (
        lambda _: tar_of(top(), (entry("alpha/cluster.key", tarfile.SYMTYPE, "/etc/passwd"), None)),
        "only files",
    ),
    "hard-link": (
        lambda _: tar_of(top(), (entry("alpha/cluster.key", tarfile.LNKTYPE, "/etc/passwd"), None)),
        "only files",
    ),
    "fifo": (lambda _: tar_of(top(), (entry("alpha/pipe", tarfile.FIFOTYPE), None)), "only files"),
    "hidden-file": (lambda _: tar_of(top(), (entry("alpha/.profile"), b"x")), "unexpected file"),
    "duplicate-file": (
        lambda _: tar_of(top(), (entry("alpha/ca.crt"), b"x"), (entry("alpha/ca.crt"), b"y")),
        "unexpected file",
    ),
    "too-many-files": (
        lambda _: tar_of(*[(entry(f"alpha/f{i}"), b"x") for i in range(MAX_MEMBERS + 1)]),
        "more than",
    ),
    "too-large": (
        lambda _: tar_of(top(), (entry("alpha/big"), b"\0" * (9 * 1024 * 1024))),
        "more than",
    ),
    "not-an-archive": (lambda _: b"<html>proxy error</html>", "not a readable bundle archive"),
    "truncated": (lambda p: bundle_archive(p, "alpha")[:200], "not a readable bundle archive"),
    "files-missing": (lambda _: tar_of(top(), (entry("alpha/ca.crt"), b"x")), "missing"),
    "bundle-of-another-cluster": (
        lambda p: bundle_archive(p, "beta", arcname="alpha"),
        "bundle of cluster beta, not alpha",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_an_archive_that_is_not_a_plain_bundle_writes_nothing(tmp_path: Path, case: str) -> None:
    build, message = BAD_ARCHIVES[case]
    archive = build(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BundleError, match=message):
        unpack_bundle(archive, prepare_bundle_dir(out, "alpha"))
    assert list(out.iterdir()) == []
    assert not (tmp_path / "escape").exists()
