"""Secrets at rest: a planted secret is nowhere in plain text in what the hub or the edge store.

A real hub (`fleetbus up`), a real edge (leaf nats-server, connector with the Kubernetes
executor) and the cluster controller on the test apiserver. The CLI publishes a Helm chart
whose Secret takes a password and a token from the chart's own `values.yaml`, a plain YAML
Secret, and a per-cluster override carrying another password and a value marked sensitive by
path under a key that names no secret. Each is a unique random marker. The Secret reaches the
apiserver with the override's values (the cluster got the right plaintext); then every byte
the hub and the edge stored is searched: every file under both data dirs (JetStream store,
chart store, projector.db and its WAL, keyring, logs), every message of every stream read back
through NATS (decompressed by the server), the CLI's outputs. No marker may appear, neither as
text, nor base64, nor inside zlib, gzip or base64 wrappings.

Then, on a second hub: rotating the keys keeps old envelopes readable and seals new ones with
the new keys; removing a cluster shreds its keys (its own secrets in the log fail to open,
naming the key, while `state --at` and `events` still work and other clusters are unaffected);
`keys shred` of a live cluster reseals its desired state with a new key, and an override
sealed with the shredded key is refused with a reason naming it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gzip
import re
import secrets
import subprocess
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NatsClient

from edge_connector.kube_executor import ApiClient, KubernetesExecutor
from events.codec import EventDecoder
from events.store import connect
from fleetbus.bundle import read_edge_bundle
from fleetbus.edge import EdgeRuntime, EdgeState
from sealing.envelope import key_id_of_bytes, open_bytes
from sealing.errors import KeyUnavailable
from sealing.keyring import Keyring
from sealing.trees import open_tree
from taskset.codec import decode_cluster_task
from tests.eventually import eventually, eventually_value
from tests.faults.harness import record_figures
from tests.integration.controller_harness import ControllerEnv
from tests.security.live_hub import LiveHub

pytestmark = pytest.mark.kube


def marker(kind: str) -> str:
    return f"fbatrest{kind}{secrets.token_hex(10)}"


@dataclass
class Planted:
    chart_password: str = field(default_factory=lambda: marker("chartpw"))
    chart_token: str = field(default_factory=lambda: marker("charttoken"))
    override_password: str = field(default_factory=lambda: marker("overridepw"))
    marked_note: str = field(default_factory=lambda: marker("marked"))
    yaml_secret: str = field(default_factory=lambda: marker("yaml"))

    @property
    def all(self) -> dict[str, str]:
        return {
            "chart values.yaml password": self.chart_password,
            "chart values.yaml token": self.chart_token,
            "override password": self.override_password,
            "override value marked sensitive": self.marked_note,
            "plain YAML Secret": self.yaml_secret,
        }


# --- the detector -------------------------------------------------------------------------------

BLOB = re.compile(rb"[A-Za-z0-9+/_-]{24,}={0,2}")
ZLIB_HEADERS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")


def encoded_forms(value: str) -> list[bytes]:
    """The value, and the parts of its base64 that are the same whatever precedes it."""
    raw = value.encode()
    forms = [raw]
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw)
        core = encoded[(4 * offset + 2) // 3 + 2 : -4]
        forms += [core, core.replace(b"+", b"-").replace(b"/", b"_")]
    return forms


def unwrapped(data: bytes, depth: int = 0) -> Iterator[bytes]:
    """`data`, and what zlib streams, gzip members and base64 runs inside it decode to."""
    yield data
    if depth >= 3:
        return
    for header in ZLIB_HEADERS:
        start = data.find(header)
        while start != -1:
            with contextlib.suppress(zlib.error):
                inflated = zlib.decompressobj().decompress(data[start:], 64 * 1024 * 1024)
                if inflated:
                    yield from unwrapped(inflated, depth + 1)
            start = data.find(header, start + 1)
    start = data.find(b"\x1f\x8b\x08")
    while start != -1:
        with contextlib.suppress(OSError, EOFError, zlib.error):
            yield from unwrapped(gzip.decompress(data[start:]), depth + 1)
        start = data.find(b"\x1f\x8b\x08", start + 1)
    for match in BLOB.finditer(data):
        chunk = match.group(0)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            with contextlib.suppress(binascii.Error, ValueError):
                decoded = decode(chunk + b"=" * (-len(chunk) % 4))
                if any(decoded.startswith(h) for h in (*ZLIB_HEADERS, b"\x1f\x8b")):
                    yield from unwrapped(decoded, depth + 1)
                else:
                    yield decoded


def leaks(planted: Planted, data: bytes) -> list[str]:
    found = []
    for what, value in planted.all.items():
        forms = encoded_forms(value)
        if any(form in layer for layer in unwrapped(data) for form in forms):
            found.append(what)
    return found


def test_the_detector_sees_through_zlib_gzip_and_base64() -> None:
    planted = Planted()
    value = planted.override_password.encode()
    assert leaks(planted, b"x" + value) == ["override password"]
    assert leaks(planted, b"\0\1" + zlib.compress(b"k: " + value) + b"\7") == ["override password"]
    assert leaks(planted, gzip.compress(b"values: " + value)) == ["override password"]
    wrapped = base64.b64encode(zlib.compress(b'{"password": "' + value + b'"}'))
    assert leaks(planted, b'{"body": "' + wrapped + b'"}') == ["override password"]
    assert leaks(planted, b'"' + base64.b64encode(b"ab" + value) + b'"') == ["override password"]
    assert leaks(planted, b"nothing here " + secrets.token_bytes(4096)) == []


# --- reading what the servers hold ---------------------------------------------------------------


def hub_credentials(hub: LiveHub) -> Path:
    return hub.data_dir / "creds" / "hub.creds"


async def hub_connection(hub: LiveHub) -> NatsClient:
    info = orjson.loads((hub.data_dir / "hub.json").read_bytes())
    return await connect(
        info["nats_url"], credentials=hub_credentials(hub), max_reconnect_attempts=1
    )


async def stream_messages(nc: NatsClient) -> dict[str, bytes]:
    """Every message (headers and data) of every stream the server holds, by stream and seq."""
    names_reply = await nc.request("$JS.API.STREAM.NAMES", b"{}", timeout=5)
    names = orjson.loads(names_reply.data).get("streams") or []
    assert names, "the server lists no streams"
    stored: dict[str, bytes] = {}
    for name in names:
        info = orjson.loads((await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=5)).data)
        state = info["state"]
        for seq in range(int(state["first_seq"]), int(state["last_seq"]) + 1):
            reply = await nc.request(
                f"$JS.API.STREAM.MSG.GET.{name}", orjson.dumps({"seq": seq}), timeout=5
            )
            message = orjson.loads(reply.data).get("message")
            if not message:
                continue
            data = base64.b64decode(message.get("data") or "")
            headers = base64.b64decode(message.get("hdrs") or "")
            stored[f"{name} #{seq} {message.get('subject')}"] = headers + b"\n" + data
    return stored


def every_file(root: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


async def desired_payload(nc: NatsClient, cluster: str, taskset: str) -> bytes | None:
    reply = await nc.request(
        "$JS.API.DIRECT.GET.DESIRED",
        orjson.dumps({"last_by_subj": f"fleet.desired.{cluster}.{taskset}"}),
        timeout=5,
    )
    if (reply.headers or {}).get("Status"):
        return None
    return bytes(reply.data)


def open_desired(keyring: Keyring, cluster: str, taskset: str, payload: bytes) -> Any:
    subject = f"fleet.desired.{cluster}.{taskset}"
    return decode_cluster_task(open_bytes(keyring, payload, subject.encode(), subject))


# --- the planted secret through the whole loop -----------------------------------------------


def write_sources(root: Path, planted: Planted) -> tuple[Path, Path, Path]:
    chart = root / "vault"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: vault\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(
        f"password: {planted.chart_password}\ntoken: {planted.chart_token}\nextra:\n  note: hello\n"
    )
    (chart / "templates" / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vault-credentials\n"
        "stringData:\n  password: {{ .Values.password | quote }}\n"
        "  note: {{ .Values.extra.note | quote }}\n"
        "data:\n  token: {{ .Values.token | b64enc | quote }}\n"
    )
    override = root / "override-values.yaml"
    override.write_text(
        f"password: {planted.override_password}\nextra:\n  note: {planted.marked_note}\n"
    )
    plain = root / "plain" / "secret.yaml"
    plain.parent.mkdir()
    plain.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: plain\n"
        f"stringData:\n  key: {planted.yaml_secret}\n"
    )
    return chart, override, plain.parent


@pytest.fixture
def live_hub(tmp_path: Path) -> Iterator[LiveHub]:
    hub = LiveHub(tmp_path / "hub")
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
async def edge_for(
    live_hub: LiveHub, env: ControllerEnv, kube_apiserver: Any, tmp_path: Path
) -> AsyncIterator[EdgeRuntime]:
    data = ("--data-dir", str(live_hub.data_dir))
    bundle = tmp_path / "bundle"
    registered = await asyncio.to_thread(
        live_hub.cli, "cluster", "register", "east", "--out", str(bundle), *data
    )
    assert registered.returncode == 0, registered.stderr.decode()
    executor = KubernetesExecutor(
        ApiClient.from_kubeconfig(kube_apiserver.kubeconfig),
        cluster="east",
        namespace=env.namespace,
        apply_timeout=60,
    )
    edge = await EdgeRuntime.leaf(read_edge_bundle(bundle), EdgeState(tmp_path / "edge"), executor)
    try:
        yield edge
    finally:
        if not edge.nc.is_closed:
            await edge.stop()


async def test_a_planted_secret_reaches_the_cluster_and_is_nowhere_in_plain_text_at_rest(
    live_hub: LiveHub, env: ControllerEnv, edge_for: EdgeRuntime, tmp_path: Path
) -> None:
    hub, edge = live_hub, edge_for
    planted = Planted()
    chart, override, plain = write_sources(tmp_path, planted)
    data = ("--data-dir", str(hub.data_dir))
    ns = ("--namespace", env.namespace)
    shown: dict[str, bytes] = {}

    def cli(label: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        result = hub.cli(*args, *data)
        shown[f"fleetbus {label} (stdout)"] = result.stdout
        shown[f"fleetbus {label} (stderr)"] = result.stderr
        assert result.returncode == 0, f"fleetbus {label}: {result.stderr.decode()}"
        return result

    await asyncio.to_thread(
        cli, "publish chart", "publish", str(chart), "--name", "vault", *ns, "--cluster", "east"
    )
    await asyncio.to_thread(
        cli, "publish plain", "publish", str(plain), "--name", "plain", *ns, "--cluster", "east"
    )
    await asyncio.to_thread(
        cli,
        "override set",
        "override",
        "set",
        "vault",
        "--name",
        "east-pw",
        "--cluster",
        "east",
        "--values",
        str(override),
        "--sensitive",
        "extra.note",
    )

    def decoded(secret: Any) -> dict[str, str]:
        return {k: base64.b64decode(v).decode() for k, v in (secret or {}).get("data", {}).items()}

    async def credentials() -> dict[str, str]:
        return decoded(await env.get("v1", "Secret", "vault-credentials", env.namespace))

    applied = await eventually_value(
        credentials,
        "the override's Secret applied on the cluster",
        lambda found: found.get("password") == planted.override_password,
        within=90,
        interval=0.3,
    )
    assert applied == {
        "password": planted.override_password,
        "note": planted.marked_note,
        "token": planted.chart_token,
    }
    plain_secret = await eventually_value(
        lambda: env.get("v1", "Secret", "plain", env.namespace),
        "the plain YAML Secret applied",
        lambda found: found is not None,
        within=60,
        interval=0.3,
    )
    assert decoded(plain_secret) == {"key": planted.yaml_secret}

    # What the hub holds for the cluster is sealed with the cluster's own data key.
    nc = await hub_connection(hub)
    try:
        payload = await desired_payload(nc, "east", "vault")
        assert payload is not None
        assert key_id_of_bytes(payload).startswith("cluster:east/")
        keyring = Keyring.open(hub.data_dir / "keys")
        opened = orjson.dumps(open_desired(keyring, "east", "vault", payload), default=str)
        assert planted.override_password.encode() in opened
        hub_streams = await stream_messages(nc)
    finally:
        await nc.close()
    assert any(name.startswith("OBJ_CHARTS") for name in hub_streams), "no chart was stored"
    edge_streams = await stream_messages(edge.nc)
    assert any(name.startswith("DESIRED-east") for name in edge_streams)

    for label, args in [
        ("events", ("events",)),
        ("events json", ("events", "-o", "json")),
        ("override ls", ("override", "ls", "vault")),
        ("override preview", ("override", "preview", "vault", "--cluster", "east")),
        ("state", ("state", "--cluster", "east")),
        ("state json", ("state", "--cluster", "east", "-o", "json")),
        ("status", ("status",)),
        ("keys ls", ("keys", "ls")),
    ]:
        await asyncio.to_thread(cli, label, *args)
    assert b"<masked>" in shown["fleetbus state (stdout)"]

    await edge.stop()
    await asyncio.to_thread(hub.stop)
    stored = {
        **{f"hub stream {k}": v for k, v in hub_streams.items()},
        **{f"edge stream {k}": v for k, v in edge_streams.items()},
        **every_file(hub.data_dir),
        **every_file(tmp_path / "edge"),
        "hub log": hub.log_path.read_bytes(),
        **shown,
    }
    assert any("projector.db" in name for name in stored)
    found = {where: what for where, text in stored.items() if (what := leaks(planted, text))}
    assert not found, f"planted secrets stored or shown in plain text: {found}"
    record_figures(
        "secrets at rest",
        markers=len(planted.all),
        places_checked=len(stored),
        bytes_checked=sum(len(text) for text in stored.values()),
        leaks=0,
    )


# --- rotation and crypto-shredding -----------------------------------------------------------


def secret_yaml(name: str, value: str) -> str:
    return f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  key: {value}\n"


def secret_patch(value: str) -> str:
    return f"target: {{kind: Secret, name: creds}}\nmergePatch:\n  stringData:\n    key: {value}\n"


async def events_of(nc: NatsClient, subject: str) -> list[Any]:
    """The events on `subject`, decoded as stored (envelopes stay sealed)."""
    found = []
    reply = await nc.request(
        "$JS.API.STREAM.INFO.EVENTS", orjson.dumps({"subjects_filter": subject}), timeout=5
    )
    last = int(orjson.loads(reply.data)["state"]["last_seq"])
    decoder = EventDecoder()
    for seq in range(1, last + 1):
        answer = orjson.loads(
            (
                await nc.request(
                    "$JS.API.STREAM.MSG.GET.EVENTS", orjson.dumps({"seq": seq}), timeout=5
                )
            ).data
        ).get("message")
        if answer and answer["subject"] == subject:
            found.append(decoder.decode(base64.b64decode(answer["data"])))
    return found


async def test_rotation_keeps_secrets_readable_and_shredding_forgets_one_clusters_alone(
    live_hub: LiveHub, tmp_path: Path
) -> None:
    hub = live_hub
    data = ("--data-dir", str(hub.data_dir))

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        result = hub.cli(*args, *data)
        assert result.returncode == 0, f"fleetbus {' '.join(args)}: {result.stderr.decode()}"
        return result

    published_value, east_value, west_value = (marker(k) for k in ("pub", "east", "west"))
    for cluster in ("east", "west", "north"):
        await asyncio.to_thread(cli, "cluster", "register", cluster, "--label", "env=lab")
    source = tmp_path / "creds"
    source.mkdir()
    (source / "secret.yaml").write_text(secret_yaml("creds", published_value))
    await asyncio.to_thread(cli, "publish", str(source), "--name", "creds", "--selector", "env=lab")
    for cluster, value in (("east", east_value), ("west", west_value)):
        patch = tmp_path / f"{cluster}.yaml"
        patch.write_text(secret_patch(value))
        await asyncio.to_thread(
            cli, "override", "set", "creds", "--name", cluster, "--cluster", cluster,
            "--patch", str(patch),
        )  # fmt: skip
    keyring = Keyring.open(hub.data_dir / "keys")
    nc = await hub_connection(hub)
    try:

        async def desired_value(cluster: str) -> str:
            payload = await desired_payload(nc, cluster, "creds")
            if payload is None:
                return ""
            task = open_desired(keyring, cluster, "creds", payload)
            if task.taskset is None:
                return ""
            return str(task.taskset.install[0].object["stringData"]["key"])

        for cluster, value in (("east", east_value), ("west", west_value)):
            await eventually_value(
                lambda c=cluster: desired_value(c),  # type: ignore[misc]
                f"{cluster}'s override in its desired state",
                lambda found, v=value: found == v,  # type: ignore[misc]
                within=60,
                interval=0.3,
            )
        east_payload = await desired_payload(nc, "east", "creds")
        assert east_payload is not None
        (east_override,) = await events_of(nc, "fleet.evt.override.creds.east")
        (west_override,) = await events_of(nc, "fleet.evt.override.creds.west")
        (published,) = await events_of(nc, "fleet.evt.taskset.creds")

        # Rotation: a new KEK and new data keys; every old envelope still opens.
        rotated = await asyncio.to_thread(cli, "keys", "rotate")
        assert b"re-wrapped" in rotated.stdout
        assert b"new data key cluster:east/" in rotated.stdout
        assert open_tree(keyring, east_override.patches)[0]["mergePatch"]["stringData"] == {
            "key": east_value
        }
        assert open_desired(keyring, "east", "creds", east_payload).taskset is not None
        after_rotation = marker("rotated")
        patch = tmp_path / "west2.yaml"
        patch.write_text(secret_patch(after_rotation))
        await asyncio.to_thread(
            cli, "override", "set", "creds", "--name", "west", "--cluster", "west",
            "--patch", str(patch),
        )  # fmt: skip
        await eventually_value(
            lambda: desired_value("west"),
            "west's new override delivered after the rotation",
            lambda found: found == after_rotation,
            within=60,
            interval=0.3,
        )
        new_west = await desired_payload(nc, "west", "creds")
        assert new_west is not None
        active = {k.scope: k.id for k in keyring.describe().keys if k.active}
        assert key_id_of_bytes(new_west) == active["cluster:west"]

        # Removing a cluster shreds its keys: what was sealed for it alone is gone for good.
        before_rm = datetime.now(UTC)
        await asyncio.sleep(0.01)
        removed = await asyncio.to_thread(cli, "cluster", "rm", "east")
        assert removed.returncode == 0
        with pytest.raises(KeyUnavailable, match=r"cluster:east/[0-9a-f]+: it was shredded at"):
            open_tree(keyring, east_override.patches)
        with pytest.raises(KeyUnavailable, match="shredded"):
            open_desired(keyring, "east", "creds", east_payload)
        assert open_tree(keyring, west_override.patches)[0]["mergePatch"]["stringData"] == {
            "key": west_value
        }
        assert published.body  # the hub's own snapshot stays readable (it replays)
        assert await desired_value("west") == after_rotation
        events = (await asyncio.to_thread(cli, "events", "-o", "json")).stdout
        types = [row["event"]["type"] for row in orjson.loads(events)]
        assert "KeysRotated" in types
        assert "DataKeysShredded" in types
        assert east_value.encode() not in events
        past = await asyncio.to_thread(
            cli, "state", "--cluster", "east", "--at", before_rm.isoformat(), "-o", "json"
        )
        (task,) = orjson.loads(past.stdout)["tasks"]
        assert "shredded" in task["problem"]
        assert east_value.encode() not in past.stdout

        # Shredding a live cluster: its desired state is sealed again with a new key; an
        # override sealed with the old one is refused, naming the key.
        north_before = await desired_payload(nc, "north", "creds")
        assert north_before is not None
        shred = await asyncio.to_thread(cli, "keys", "shred", "--cluster", "north")
        assert b"shredded data key cluster:north/" in shred.stdout

        async def resealed() -> bool:
            payload = await desired_payload(nc, "north", "creds")
            return payload is not None and key_id_of_bytes(payload) != key_id_of_bytes(north_before)

        await eventually(resealed, "north's desired state sealed with a new key", 60, 0.3)
        assert await desired_value("north") == published_value
        await asyncio.to_thread(cli, "keys", "shred", "--cluster", "west")

        async def west_refused() -> bool:
            refused = await events_of(nc, "fleet.evt.schedule.creds.west")
            return any(
                e.type_name == "ClusterTaskRefused" and "shredded" in e.reason for e in refused
            )

        await eventually(west_refused, "west's override refused after shredding", 60, 0.3)
    finally:
        await nc.close()
    refused = hub.cli("keys", "shred", "--cluster", "No_Such", *data)
    assert refused.returncode != 0
    assert b"Traceback" not in refused.stderr
    assert b"cluster" in refused.stderr
