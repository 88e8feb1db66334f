"""Envelope encryption of secrets at rest: envelopes, the keyring, rotation, shredding, and
finding the secret values inside documents."""

from __future__ import annotations

import base64
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from access.key_service import key_reply
from events.catalog import OverrideSet, TasksetPublished
from events.codec import encode_event
from events.sealed import EventSealer
from sealing.envelope import (
    HUB_SCOPE,
    cluster_scope,
    is_sealed_text,
    key_id_of_bytes,
    key_id_of_text,
    open_bytes,
    open_value,
    seal_bytes,
    seal_value,
)
from sealing.errors import EnvelopeInvalid, KeyringInvalid, KeyUnavailable, SealingError
from sealing.keyring import Keyring
from sealing.trees import open_taskset, open_tree, seal_patches, seal_sensitive, seal_taskset
from taskset.codec import decode_taskset, encode_taskset
from taskset.model import SourceInfo, Step, Taskset

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
SECRET = "s3cr3t-Ju7pQ2vX9"


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    return Keyring.open(tmp_path / "keys")


def secret_manifest() -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "app"},
        "stringData": {"password": SECRET},
        "data": {"token": "dG9rZW4="},
    }


def taskset_with_secret() -> Taskset:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    return Taskset(
        name="app",
        install=[Step(object=secret_manifest()), Step(object=config)],
        source=SourceInfo(format="yaml", digest="sha256:0"),
    )


# --- envelopes ----------------------------------------------------------------------------------


def test_a_sealed_value_opens_to_the_same_value_and_type(keyring: Keyring) -> None:
    for value in (SECRET, 12345, {"user": "a", "password": SECRET}, ["x", 1]):
        text = seal_value(keyring, HUB_SCOPE, value)
        assert is_sealed_text(text)
        assert SECRET not in text
        assert open_value(keyring, text) == value
        assert key_id_of_text(text).startswith("hub/")


def test_sealing_twice_gives_different_ciphertexts(keyring: Keyring) -> None:
    assert seal_value(keyring, HUB_SCOPE, SECRET) != seal_value(keyring, HUB_SCOPE, SECRET)


def test_a_tampered_text_envelope_is_refused_naming_its_key(keyring: Keyring) -> None:
    text = seal_value(keyring, HUB_SCOPE, SECRET)
    flipped = text[:-3] + ("A" if text[-3] != "A" else "B") + text[-2:]
    with pytest.raises(
        EnvelopeInvalid, match=r"data key hub/[0-9a-f]+ does not open: it was altered"
    ):
        open_value(keyring, flipped)


def test_a_tampered_bytes_envelope_is_refused(keyring: Keyring) -> None:
    sealed = bytearray(seal_bytes(keyring, cluster_scope("a"), b"payload", b"fleet.desired.a.x"))
    sealed[-1] ^= 1
    with pytest.raises(EnvelopeInvalid, match=r"desired a\.x: the envelope sealed with data key"):
        open_bytes(keyring, bytes(sealed), b"fleet.desired.a.x", "desired a.x")


def test_a_bytes_envelope_does_not_open_in_another_place(keyring: Keyring) -> None:
    sealed = seal_bytes(keyring, cluster_scope("a"), b"payload", b"fleet.desired.a.x")
    assert open_bytes(keyring, sealed, b"fleet.desired.a.x", "here") == b"payload"
    with pytest.raises(EnvelopeInvalid, match="sealed for another place"):
        open_bytes(keyring, sealed, b"fleet.desired.a.y", "there")


def test_an_envelope_of_another_hub_names_the_missing_key(tmp_path: Path) -> None:
    ours = Keyring.open(tmp_path / "ours")
    theirs = Keyring.open(tmp_path / "theirs")
    text = seal_value(theirs, HUB_SCOPE, SECRET)
    with pytest.raises(KeyUnavailable, match="not in this hub's keyring"):
        open_value(ours, text)


def test_garbage_is_not_an_envelope(keyring: Keyring) -> None:
    with pytest.raises(EnvelopeInvalid, match="does not start with FBSEAL1"):
        key_id_of_bytes(b"plain")
    with pytest.raises(EnvelopeInvalid, match="cut short"):
        open_bytes(keyring, b"FBSEAL1\n\x03abc", b"", "x")
    with pytest.raises(EnvelopeInvalid, match=r"not base64|cut short"):
        open_value(keyring, "fbsealed:v1:hub/00:!!!")


# --- the keyring --------------------------------------------------------------------------------


def test_the_keyring_files_are_the_hub_users_alone_and_hold_no_plain_key(tmp_path: Path) -> None:
    keyring = Keyring.open(tmp_path / "keys")
    key_id, key = keyring.active_key(cluster_scope("a"))
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    for path in (tmp_path / "keys").iterdir():
        if path.suffix in (".json", ".key"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    raw = (tmp_path / "keys" / "keyring.json").read_bytes()
    assert key_id.encode() in raw
    assert key not in raw
    assert msgspec.json.encode(key) not in raw


def test_kek_rotation_rewraps_and_keeps_old_envelopes_readable(tmp_path: Path) -> None:
    keyring = Keyring.open(tmp_path / "keys")
    old_text = seal_value(keyring, cluster_scope("a"), SECRET)
    old_kek = keyring.describe().kek
    rotation = keyring.rotate(NOW, kek=True, scopes=[])
    assert rotation.previous_kek == old_kek
    assert rotation.kek != old_kek
    assert rotation.rewrapped == 1
    assert rotation.data_keys == []
    assert not (tmp_path / "keys" / f"kek-{old_kek}.key").exists()
    assert open_value(Keyring.open(tmp_path / "keys"), old_text) == SECRET


def test_data_key_rotation_seals_with_the_new_key_and_opens_the_old(keyring: Keyring) -> None:
    old_text = seal_value(keyring, HUB_SCOPE, SECRET)
    rotation = keyring.rotate(NOW, kek=False, scopes=None)
    new_text = seal_value(keyring, HUB_SCOPE, SECRET)
    assert key_id_of_text(new_text) in rotation.data_keys
    assert key_id_of_text(new_text) != key_id_of_text(old_text)
    assert open_value(keyring, old_text) == open_value(keyring, new_text) == SECRET


def test_shredding_a_cluster_makes_its_envelopes_unreadable_and_spares_the_others(
    tmp_path: Path,
) -> None:
    keyring = Keyring.open(tmp_path / "keys")
    other_process = Keyring.open(tmp_path / "keys")
    a_text = seal_value(keyring, cluster_scope("a"), SECRET)
    a_bytes = seal_bytes(keyring, cluster_scope("a"), b"task", b"fleet.desired.a.x")
    b_text = seal_value(keyring, cluster_scope("b"), SECRET)
    hub_text = seal_value(keyring, HUB_SCOPE, SECRET)
    assert open_value(other_process, a_text) == SECRET
    shredded = keyring.shred(cluster_scope("a"), NOW)
    assert shredded == [key_id_of_text(a_text)]
    for reader in (keyring, other_process, Keyring.open(tmp_path / "keys")):
        with pytest.raises(KeyUnavailable, match=r"cluster:a/[0-9a-f]+: it was shredded at 2026"):
            open_value(reader, a_text)
        with pytest.raises(KeyUnavailable, match="shredded"):
            open_bytes(reader, a_bytes, b"fleet.desired.a.x", "desired")
        assert open_value(reader, b_text) == SECRET
        assert open_value(reader, hub_text) == SECRET
    # the cluster gets a new key if it is ever sealed for again
    assert key_id_of_text(seal_value(keyring, cluster_scope("a"), 1)) != shredded[0]


def test_the_hubs_own_keys_cannot_be_shredded(keyring: Keyring) -> None:
    with pytest.raises(SealingError, match="cannot be shredded"):
        keyring.shred(HUB_SCOPE, NOW)


def test_a_replaced_kek_is_named_not_used(tmp_path: Path) -> None:
    keyring = Keyring.open(tmp_path / "keys")
    text = seal_value(keyring, HUB_SCOPE, SECRET)
    kek_file = next((tmp_path / "keys").glob("kek-*.key"))
    kek_file.write_text("A" * 43 + "=\n")
    with pytest.raises(KeyringInvalid, match="does not unwrap with key-encryption key"):
        open_value(Keyring.open(tmp_path / "keys"), text)
    kek_file.unlink()
    with pytest.raises(KeyringInvalid, match=r"key-encryption key .* is missing"):
        Keyring.open(tmp_path / "keys")


# --- what is secret in a document -------------------------------------------------------------


def test_sensitive_values_are_sealed_by_key_shape_and_mark(keyring: Keyring) -> None:
    values = {
        "replicas": 2,
        "db": {"pw": SECRET, "host": "db", "url": f"postgres://app:{SECRET}@db/app"},
        "extra": {"plain": SECRET},
        "hosts": [{"name": "a", "apiToken": SECRET}],
    }
    sealed = seal_sensitive(keyring, HUB_SCOPE, values, {"extra.plain"})
    assert SECRET not in msgspec.json.encode(sealed).decode()
    assert sealed["replicas"] == 2
    assert sealed["db"]["host"] == "db"
    assert sealed["hosts"][0]["name"] == "a"
    assert open_tree(keyring, sealed) == values
    unmarked = seal_sensitive(keyring, HUB_SCOPE, values)
    assert unmarked["extra"]["plain"] == SECRET


def test_a_secrets_data_is_sealed_and_the_rest_of_the_taskset_is_not(keyring: Keyring) -> None:
    taskset = taskset_with_secret()
    sealed = seal_taskset(keyring, HUB_SCOPE, taskset)
    body = encode_taskset(sealed)
    assert SECRET.encode() not in msgspec.json.encode(sealed)
    secret = sealed.install[0].object
    assert set(secret["stringData"]) == {"password"}
    assert secret["metadata"] == {"name": "db", "namespace": "app"}
    assert sealed.install[1] is taskset.install[1]
    assert open_taskset(keyring, decode_taskset(body)) == taskset
    assert open_taskset(keyring, taskset) is taskset


def test_secret_values_in_patches_are_sealed(keyring: Keyring) -> None:
    patches: list[dict[str, Any]] = [
        {
            "target": {"kind": "Secret", "name": "db"},
            "mergePatch": {"stringData": {"password": SECRET}, "metadata": {"labels": {"a": "b"}}},
        },
        {
            "target": {"kind": "Secret", "name": "db"},
            "jsonPatch": [{"op": "add", "path": "/data/key", "value": SECRET}],
        },
        {
            "target": {"kind": "Deployment", "name": "web"},
            "jsonPatch": [
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "add", "path": "/metadata/annotations/token", "value": SECRET},
            ],
        },
    ]
    sealed = seal_patches(keyring, HUB_SCOPE, patches)
    assert SECRET not in msgspec.json.encode(sealed).decode()
    assert sealed[0]["mergePatch"]["metadata"] == {"labels": {"a": "b"}}
    assert sealed[2]["jsonPatch"][0]["value"] == 3
    assert open_tree(keyring, sealed) == patches


def test_events_are_sealed_with_the_hub_key_or_the_clusters_own(keyring: Keyring) -> None:
    sealer = EventSealer(keyring)
    body = encode_taskset(taskset_with_secret())
    published = TasksetPublished(
        id="01a0f5b1-0000-7000-8000-000000000001",
        occurred_at=NOW,
        actor="user:admin",
        taskset="app",
        taskset_version=1,
        digest="sha256:1",
        source_digest="sha256:0",
        format="yaml",
        body=body,
        body_size=len(body),
        values={"adminPassword": SECRET},
    )
    sealed = sealer.seal(published)
    assert isinstance(sealed, TasksetPublished)
    assert SECRET.encode() not in encode_event(sealed)
    assert SECRET.encode() not in decode_taskset(sealed.body).install[0].object.__repr__().encode()
    assert sealed.body_size == len(sealed.body)
    assert sealed.digest == published.digest
    override = OverrideSet(
        id="01a0f5b1-0000-7000-8000-000000000002",
        occurred_at=NOW,
        actor="user:admin",
        taskset="app",
        name="one",
        cluster="edge-1",
        values={"note": SECRET, "replicas": 2},
        sensitive=["note"],
    )
    sealed_override = sealer.seal(override)
    assert isinstance(sealed_override, OverrideSet)
    assert SECRET.encode() not in encode_event(sealed_override)
    assert key_id_of_text(sealed_override.values["note"]).startswith("cluster:edge-1/")
    keyring.shred(cluster_scope("edge-1"), NOW)
    with pytest.raises(KeyUnavailable, match="shredded"):
        open_tree(keyring, sealed_override.values)
    assert open_tree(keyring, sealed.values) == {"adminPassword": SECRET}


# --- what the key service gives an edge ---------------------------------------------------------


def test_the_key_service_gives_a_cluster_its_own_keys_and_nothing_else(keyring: Keyring) -> None:
    own, key = keyring.active_key(cluster_scope("a"))
    other, _ = keyring.active_key(cluster_scope("b"))
    hub, _ = keyring.active_key(HUB_SCOPE)
    registered = {"a", "b"}
    answer = key_reply(keyring, "a", own, registered)
    assert answer == {"id": own, "key": base64.b64encode(key).decode()}
    assert key_reply(keyring, "a", other, registered) == {
        "error": f"data key {other} is not a key of cluster a"
    }
    assert "key" not in key_reply(keyring, "a", hub, registered)
    assert key_reply(keyring, "c", own, registered) == {"error": "cluster c is not registered"}
    keyring.shred(cluster_scope("a"), NOW)
    assert "shredded" in key_reply(keyring, "a", own, registered)["error"]


def test_many_clusters_get_their_keys_in_one_keyring_write(tmp_path: Path) -> None:
    keyring = Keyring.open(tmp_path / "keys")
    keyring.ensure([cluster_scope(f"sim-{i}") for i in range(500)])
    stamp = (tmp_path / "keys" / "keyring.json").stat().st_mtime_ns
    ids = {keyring.active_key(cluster_scope(f"sim-{i}"))[0] for i in range(500)}
    assert len(ids) == 500
    assert (tmp_path / "keys" / "keyring.json").stat().st_mtime_ns == stamp
