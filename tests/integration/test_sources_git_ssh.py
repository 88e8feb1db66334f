"""Git over SSH against a real SSH server on loopback (asyncssh, running `git-upload-pack`):
an overlay is fetched with a deploy key held as credentials and the server's host key checked
against the credentials' known hosts; an unknown or changed host key and a key the server does
not take are refused with errors naming the host, and the key never shows in them."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sources.credentials import Credential, CredentialStore
from sources.errors import InvalidSourceReference, SourceTimedOut, SourceUnreachable
from sources.fetch import FetchPolicy, fetch_source
from sources.limits import SourceLimits
from sources.references import HostAllowList, SourceRef
from tests.source_servers import GitServer, SshGitServer, git_server, ssh_key_pair

__all__ = ["git_server"]

LOOPBACK = FetchPolicy(allowed=HostAllowList.parse(["127.0.0.1"]))
OVERLAY = {
    "prod/kustomization.yaml": "resources:\n- cm.yaml\n",
    "prod/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  a: b\n",
}


@dataclass
class SshSetup:
    server: SshGitServer
    deploy_key: str
    """The private key the server takes (OpenSSH form)."""

    def credential(self, *, key: str = "", known_hosts: str | None = None) -> Credential:
        return Credential(
            kind="ssh-key",
            ssh_key=key or self.deploy_key,
            known_hosts=self.server.known_hosts() if known_hosts is None else known_hosts,
        )


@pytest.fixture
def ssh(git_server: GitServer) -> Iterator[SshSetup]:
    if shutil.which("ssh") is None:
        pytest.fail("Git over SSH needs the ssh client: install openssh-client")
    private, public = ssh_key_pair()
    server = SshGitServer(git_server, authorized=[public])
    server.start()
    try:
        yield SshSetup(server, private)
    finally:
        server.stop()


def key_lines(key: str) -> list[str]:
    return [line for line in key.splitlines() if line and "PRIVATE KEY" not in line]


def test_an_overlay_is_cloned_and_fetched_over_ssh_with_a_deploy_key(
    ssh: SshSetup, git_server: GitServer, tmp_path: Path
) -> None:
    first = git_server.create("overlays", OVERLAY)
    ref = SourceRef(kind="git", url=ssh.server.url("overlays"), ref="main", path="prod")
    credential = ssh.credential()
    (tmp_path / "a").mkdir()
    fetched = fetch_source(ref, tmp_path / "a", LOOPBACK, credential=credential)
    assert fetched is not None
    assert (fetched.provenance.kind, fetched.provenance.commit) == ("git", first)
    assert (fetched.path / "kustomization.yaml").read_text() == OVERLAY["prod/kustomization.yaml"]
    assert ssh.server.logins.requests >= 2, "ls-remote and fetch went over SSH"
    (tmp_path / "b").mkdir()
    assert (
        fetch_source(ref, tmp_path / "b", LOOPBACK, credential=credential, known=fetched.provenance)
        is None
    )
    second = git_server.commit("overlays", {"prod/cm.yaml": OVERLAY["prod/cm.yaml"] + "  c: d\n"})
    (tmp_path / "c").mkdir()
    again = fetch_source(
        ref, tmp_path / "c", LOOPBACK, credential=credential, known=fetched.provenance
    )
    assert again is not None
    assert again.provenance.commit == second != first
    assert "c: d" in (again.path / "cm.yaml").read_text()


def test_an_unknown_host_key_is_refused_naming_the_host(
    ssh: SshSetup, git_server: GitServer, tmp_path: Path
) -> None:
    git_server.create("overlays", OVERLAY)
    ref = SourceRef(kind="git", url=ssh.server.url("overlays"), ref="main", path="prod")
    other_host = ssh.server.known_hosts().replace(f"[127.0.0.1]:{ssh.server.port}", "[127.0.0.1]:1")
    (tmp_path / "a").mkdir()
    with pytest.raises(SourceUnreachable) as refused:
        fetch_source(
            ref, tmp_path / "a", LOOPBACK, credential=ssh.credential(known_hosts=other_host)
        )
    message = str(refused.value)
    assert (
        f"the SSH host key of 127.0.0.1:{ssh.server.port} is not among the known hosts" in message
    )
    assert ssh.server.logins.requests == 0, "nothing was asked of a server not known"
    assert not any(line in message for line in key_lines(ssh.deploy_key))


def test_a_changed_host_key_is_refused_naming_the_host(
    ssh: SshSetup, git_server: GitServer, tmp_path: Path
) -> None:
    git_server.create("overlays", OVERLAY)
    ref = SourceRef(kind="git", url=ssh.server.url("overlays"), ref="main", path="prod")
    _, impostor = ssh_key_pair()
    changed = f"[127.0.0.1]:{ssh.server.port} {impostor}\n"
    (tmp_path / "a").mkdir()
    with pytest.raises(SourceUnreachable) as refused:
        fetch_source(ref, tmp_path / "a", LOOPBACK, credential=ssh.credential(known_hosts=changed))
    assert f"the SSH host key of 127.0.0.1:{ssh.server.port} does not match the known hosts" in str(
        refused.value
    )
    assert ssh.server.logins.requests == 0


def test_a_key_the_server_does_not_take_is_refused_and_never_shown(
    ssh: SshSetup, git_server: GitServer, tmp_path: Path
) -> None:
    git_server.create("overlays", OVERLAY)
    ref = SourceRef(kind="git", url=ssh.server.url("overlays"), ref="main", path="prod")
    wrong, _ = ssh_key_pair()
    (tmp_path / "a").mkdir()
    with pytest.raises(SourceUnreachable) as refused:
        fetch_source(ref, tmp_path / "a", LOOPBACK, credential=ssh.credential(key=wrong))
    message = str(refused.value)
    assert f"the SSH server 127.0.0.1:{ssh.server.port} refused the key" in message
    assert "Permission denied (publickey)" in message
    assert not any(line in message for line in key_lines(wrong))
    assert ssh.server.logins.requests == 0


def test_ssh_sources_need_ssh_credentials_with_known_hosts_before_anything_is_contacted(
    ssh: SshSetup, tmp_path: Path
) -> None:
    ref = SourceRef(kind="git", url=ssh.server.url("overlays"), ref="main", path="prod")
    with pytest.raises(InvalidSourceReference, match="name ssh-key credentials"):
        fetch_source(ref, tmp_path, LOOPBACK)
    with pytest.raises(InvalidSourceReference, match="hold no known hosts"):
        fetch_source(ref, tmp_path, LOOPBACK, credential=ssh.credential(known_hosts=""))
    assert ssh.server.connections.requests == 0
    store = CredentialStore(tmp_path / "credentials.json")
    with pytest.raises(InvalidSourceReference, match=r"--known-hosts FILE, e.g. from `ssh-keyscan"):
        store.set("deploy", ssh.credential(known_hosts="# nothing\n"))
    with pytest.raises(
        InvalidSourceReference, match="known_hosts line 1 is not `host keytype key`"
    ):
        store.set("deploy", ssh.credential(known_hosts="127.0.0.1 ssh-ed25519\n"))
    assert not (tmp_path / "credentials.json").exists(), "nothing half-written"


def ssh_clients_for(port: int) -> list[int]:
    """ssh processes (anyone's) still talking to 127.0.0.1:`port`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            words = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if words and words[0].endswith(b"ssh") and str(port).encode() in words:
            found.append(int(entry))
    return found


def test_a_server_that_never_answers_times_out_and_leaves_no_ssh_behind(
    ssh: SshSetup, tmp_path: Path
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    try:
        ref = SourceRef(
            kind="git", url=f"ssh://git@127.0.0.1:{port}/overlays.git", ref="main", path="prod"
        )
        policy = FetchPolicy(allowed=LOOPBACK.allowed, limits=SourceLimits(timeout_s=2))
        credential = ssh.credential(
            known_hosts=f"[127.0.0.1]:{port} {ssh.server.known_hosts().split(' ', 1)[1]}"
        )
        started = time.monotonic()
        with pytest.raises(
            SourceTimedOut,
            match=rf"asking ssh://git@127.0.0.1:{port}/overlays.git for main took longer than 2s",
        ):
            fetch_source(ref, tmp_path, policy, credential=credential)
        # Far below forever (the server never answers), however slow a loaded machine is.
        assert time.monotonic() - started < 60
        assert not ssh_clients_for(port), "the ssh git started was killed with it"
    finally:
        silent.close()
