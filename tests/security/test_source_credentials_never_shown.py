"""Source credentials for Git over SSH and a private OCI registry, used through a real hub
(`fleetbus up --sim-clusters 1`): a deploy key and a registry password are stored through the
CLI, a standing source fetches an overlay over SSH and reaches the simulated cluster with its
commit, a chart is published from the registry after a login; a wrong key and a wrong password
are refused with errors that name the host. Then every CLI output, the events, the API's views
of sources and credentials and the hub's log are searched: neither the key (any line of it) nor
the password may appear, as text or base64-encoded.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.eventually import eventually
from tests.security.live_hub import LiveHub
from tests.security.test_secrets_never_shown import encoded_forms, hidden_blobs
from tests.source_servers import (
    GitServer,
    OciRegistry,
    SshGitServer,
    git_server,
    make_chart,
    package_chart,
    ssh_key_pair,
)

__all__ = ["git_server"]

REGISTRY_PASSWORD = "fbplantedregistry5c1e07d2"
WRONG_PASSWORD = "fbplantedwrongpass9a0b"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[LiveHub]:
    live = LiveHub(tmp_path / "hub", ("--sim-clusters", "1", "--source-host", "127.0.0.1"))
    live.start(timeout=120)
    try:
        yield live
    finally:
        live.stop()


def secrets_in(text: bytes, secrets: dict[str, str]) -> list[str]:
    found = []
    for what, value in secrets.items():
        if any(form in text for form in encoded_forms(value)):
            found.append(what)
        elif any(value.encode() in blob for blob in hidden_blobs(text)):
            found.append(f"{what} (inside an encoded blob)")
    return found


def key_secrets(label: str, key: str) -> dict[str, str]:
    """Each line of the key's body: any of them shown is a leak."""
    lines = [line for line in key.splitlines() if line and "PRIVATE KEY" not in line]
    return {f"{label} line {n}": line for n, line in enumerate(lines, start=1) if len(line) >= 16}


async def test_a_deploy_key_and_a_registry_password_are_used_and_never_shown(
    hub: LiveHub, git_server: GitServer, tmp_path: Path
) -> None:
    deploy_key, deploy_public = ssh_key_pair()
    wrong_key, _ = ssh_key_pair()
    ssh = SshGitServer(git_server, authorized=[deploy_public])
    ssh.start()
    registry = OciRegistry(tmp_path / "oci", username="puller", password=REGISTRY_PASSWORD)
    registry.start()
    try:
        commit = git_server.create(
            "overlays",
            {
                "prod/kustomization.yaml": "resources: [cm.yaml]\n",
                "prod/cm.yaml": (
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: over-ssh\ndata:\n  a: b\n"
                ),
            },
        )
        registry.push(package_chart(make_chart(tmp_path / "src", "api", "1.0.0"), tmp_path / "pkg"))
        secrets = {
            "registry password": REGISTRY_PASSWORD,
            "wrong registry password": WRONG_PASSWORD,
            **key_secrets("deploy key", deploy_key),
            **key_secrets("wrong key", wrong_key),
        }
        data = ("--data-dir", str(hub.data_dir))
        shown: dict[str, bytes] = {}

        def cli(label: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[bytes]:
            result = hub.cli(*args, *data, stdin=stdin.encode() if stdin else None)
            shown[f"fleetbus {label} (stdout)"] = result.stdout
            shown[f"fleetbus {label} (stderr)"] = result.stderr
            return result

        def ok(label: str, *args: str, stdin: str = "") -> str:
            result = cli(label, *args, stdin=stdin)
            assert result.returncode == 0, f"fleetbus {label}: {result.stderr.decode()}"
            return result.stdout.decode()

        for name, key in (("deploy", deploy_key), ("wrong-key", wrong_key)):
            (tmp_path / name).write_text(key)
        (tmp_path / "known_hosts").write_text(ssh.known_hosts())
        for name in ("deploy", "wrong-key"):
            ok(
                f"credentials set {name}",
                *("source", "credentials", "set", name, "--ssh-key", str(tmp_path / name)),
                *("--known-hosts", str(tmp_path / "known_hosts")),
            )
        (tmp_path / "no-hosts").write_text("# none\n")
        for label, hosts in (
            ("without", ()),
            ("with empty", ("--known-hosts", str(tmp_path / "no-hosts"))),
        ):
            refused = cli(
                f"credentials set {label} known hosts",
                *("source", "credentials", "set", "loose", "--ssh-key", str(tmp_path / "deploy")),
                *hosts,
            )
            assert refused.returncode == 2, refused.stderr.decode()
            assert b"host key is always checked" in refused.stderr
            assert b"Traceback" not in refused.stderr
        for name, password in (("registry", REGISTRY_PASSWORD), ("wrong-reg", WRONG_PASSWORD)):
            ok(
                f"credentials set {name}",
                *("source", "credentials", "set", name, "--username", "puller"),
                "--password-stdin",
                stdin=password + "\n",
            )

        git = ("--git", ssh.url("overlays"), "--ref", "main", "--path", "prod")
        ok(
            "source add over ssh",
            "source",
            "add",
            "overlay",
            *git,
            "--credentials",
            "deploy",
            "--cluster",
            "sim-1",
        )
        synced = ok("source sync over ssh", "source", "sync", "overlay")
        assert "overlay v1" in synced, synced
        assert commit[:12] in synced, synced

        async def delivered() -> bool:
            state = cli("state", "state", "--cluster", "sim-1", "-o", "json")
            return state.returncode == 0 and b"over-ssh" in state.stdout

        await eventually(delivered, "the overlay fetched over SSH on sim-1", 60, 0.5)

        ok("source add wrong key", "source", "add", "locked", *git, "--credentials", "wrong-key")
        failed = cli("source sync wrong key", "source", "sync", "locked")
        assert failed.returncode == 1
        assert f"the SSH server {ssh.host} refused the key".encode() in (
            failed.stdout + failed.stderr
        )

        chart = ("--chart", f"oci://{registry.host}/charts/api", "--version", "1.0.0")
        published = ok(
            "publish from the registry",
            "publish",
            *chart,
            "--plain-http",
            "--credentials",
            "registry",
            "--cluster",
            "sim-1",
        )
        assert "published api v1" in published
        wrong = cli(
            "publish wrong password",
            "publish",
            *chart,
            "--plain-http",
            "--credentials",
            "wrong-reg",
            "--name",
            "api2",
        )
        assert wrong.returncode != 0
        assert f"registry {registry.host} refused the login of user 'puller'".encode() in (
            wrong.stderr
        )

        for label, args in [
            ("events", ("events",)),
            ("events json", ("events", "-o", "json")),
            ("status", ("status",)),
            ("status json", ("status", "-o", "json")),
            ("source ls", ("source", "ls")),
            ("source ls json", ("source", "ls", "-o", "json")),
            ("credentials ls", ("source", "credentials", "ls")),
        ]:
            cli(label, *args)
        events = orjson.loads(shown["fleetbus events json (stdout)"])
        assert any(
            e.get("type") == "SourceFailed" and "refused the key" in orjson.dumps(e).decode()
            for e in (events if isinstance(events, list) else events.get("events", []))
        ), "the wrong key's failure is on the log, with its reason"
        token = hub.admin_token()
        for path in (
            "/api/v1/sources",
            "/api/v1/source-credentials",
            "/api/v1/events?limit=500",
        ):
            answer = hub.http("GET", path, token=token)
            assert answer.status == 200, path
            shown[f"GET {path}"] = answer.body
        hub.stop()
        shown["hub log"] = hub.log_path.read_bytes()
        stored = (hub.data_dir / "source-credentials.json").read_bytes()
        assert set(secrets_in(stored, secrets)) == set(secrets), "the hub holds all of them"

        found = {
            where: what for where, text in shown.items() if (what := secrets_in(text, secrets))
        }
        assert not found, f"source credentials shown: {found}"
    finally:
        registry.stop()
        ssh.stop()
