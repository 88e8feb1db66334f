"""Directories of Git repositories, through `git` itself.

`remote_commit` asks the server which commit a ref points at (`git ls-remote`), so a standing
source that has not moved costs one round trip. `fetch_tree` fetches that one commit shallowly
into an empty repository and checks it out. git runs:

- with only the http, https, git and ssh transports (`GIT_ALLOW_PROTOCOL`: no `file://`, no
  `ext::` commands), without the user's or the system's configuration, never prompting;
- with credentials in its environment, never on its command line: basic auth and bearer tokens
  as an `http.extraHeader` (`GIT_CONFIG_*`), an SSH key as a 0600 file in the fetch's own
  temporary directory named by `GIT_SSH_COMMAND`;
- over SSH, with strict host-key checking against the credentials' known-hosts lines only (no
  SSH configuration file is read): a server whose key is unknown or has changed is refused,
  and so is every SSH source whose credentials hold no known-hosts lines;
- under the fetch's time limit, in its own process group (`sources.processes`), so that `ssh`
  or `git-remote-http` never outlive it; submodules are not fetched, and the checked-out tree
  is held to the file and size limits, its symbolic links to the tree.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sources.credentials import Credential
from sources.errors import (
    InvalidSourceReference,
    SourceUnreachable,
)
from sources.limits import SourceLimits, check_tree
from sources.processes import FetchDeadline
from sources.references import HostAllowList, SourceRef, endpoint_of

SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass(frozen=True)
class FetchedTree:
    root: Path
    """The checked-out repository."""
    commit: str


def git_environment(workdir: Path, credential: Credential | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": "http:https:git:ssh",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
        "LC_ALL": "C",
    }
    header = ""
    if credential is not None and credential.kind == "basic":
        pair = f"{credential.username}:{credential.password}".encode()
        header = "Authorization: Basic " + base64.b64encode(pair).decode()
    elif credential is not None and credential.kind == "token":
        header = f"Authorization: Bearer {credential.token}"
    if header:
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": header,
            }
        )
    if credential is not None and credential.kind == "ssh-key":
        key = workdir / "ssh-key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(credential.ssh_key.strip() + "\n")
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(credential.known_hosts)
        env["GIT_SSH_COMMAND"] = (
            f"ssh -F none -i {key} -o IdentitiesOnly=yes -o BatchMode=yes "
            f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={known_hosts} "
            "-o GlobalKnownHostsFile=/dev/null -o UpdateHostKeys=no"
        )
    return env


@dataclass(frozen=True)
class Git:
    """`git` in one directory, with the fetch's environment, deadline and credential."""

    cwd: Path
    env: dict[str, str]
    deadline: FetchDeadline
    credential: Credential | None
    host: str = ""
    """The server, as SSH's messages are explained with it."""

    def run(self, args: list[str], what: str) -> str:
        result = self.deadline.run(["git", *args], what=what, env=self.env, cwd=self.cwd)
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace")
            message = " ".join(stderr.split())[-500:] or f"git exited {result.returncode}"
            if self.credential is not None:
                message = self.credential.scrub(message)
            raise SourceUnreachable(f"{what} failed: {_explain_ssh(stderr, self.host)}{message}")
        return result.stdout.decode(errors="replace")


def _explain_ssh(stderr: str, host: str) -> str:
    """What SSH's refusal means, in front of its own words."""
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or "has changed and you have" in stderr:
        return (
            f"the SSH host key of {host} does not match the known hosts of the credentials "
            "(the server's key changed, or something answers in its place); refusing it: "
        )
    if "Host key verification failed" in stderr:
        return (
            f"the SSH host key of {host} is not among the known hosts of the credentials; "
            "add the server's key (`ssh-keyscan`) with --known-hosts: "
        )
    if "Permission denied" in stderr:
        return f"the SSH server {host} refused the key of the credentials: "
    return ""


def _ssh_host(ref: SourceRef) -> str:
    return endpoint_of(ref).text()


def _check_ssh_credential(ref: SourceRef, credential: Credential | None) -> None:
    ssh = ref.url.startswith("ssh://") or "://" not in ref.url
    if not ssh:
        return
    host = _ssh_host(ref)
    if credential is None or credential.kind != "ssh-key":
        raise InvalidSourceReference(
            f"git source {ref.url} is reached over SSH: name ssh-key credentials "
            f"(with the known hosts of {host}) with --credentials"
        )
    if not credential.known_hosts.strip():
        raise InvalidSourceReference(
            f"the ssh-key credentials for {ref.url} hold no known hosts, so the key of "
            f"{host} cannot be checked: add it (`ssh-keyscan`) with --known-hosts"
        )


def remote_commit(
    ref: SourceRef,
    workdir: Path,
    *,
    allowed: HostAllowList,
    limits: SourceLimits,
    credential: Credential | None = None,
    deadline: FetchDeadline | None = None,
) -> str:
    """The commit `ref.ref` points at on the server (a commit SHA is its own answer)."""
    allowed.check(endpoint_of(ref), f"git source {ref.url}")
    _check_ssh_credential(ref, credential)
    wanted = ref.ref or "HEAD"
    if SHA.match(wanted):
        return wanted
    git = Git(
        workdir,
        git_environment(workdir, credential),
        deadline or FetchDeadline(limits.timeout_s),
        credential,
        _ssh_host(ref),
    )
    out = git.run(["ls-remote", "--", ref.url, wanted], f"asking {ref.url} for {wanted}")
    candidates = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        candidates[name] = sha
    for name in (wanted, f"refs/heads/{wanted}", f"refs/tags/{wanted}^{{}}", f"refs/tags/{wanted}"):
        if name in candidates:
            return candidates[name]
    raise InvalidSourceReference(f"{ref.url} has no branch or tag {wanted}")


def fetch_tree(
    ref: SourceRef,
    workdir: Path,
    *,
    allowed: HostAllowList,
    limits: SourceLimits,
    credential: Credential | None = None,
    commit: str = "",
    deadline: FetchDeadline | None = None,
) -> FetchedTree:
    """Fetch `commit` (default: what `ref.ref` points at now) and check it out."""
    deadline = deadline or FetchDeadline(limits.timeout_s)
    commit = commit or remote_commit(
        ref, workdir, allowed=allowed, limits=limits, credential=credential, deadline=deadline
    )
    root = workdir / "repo"
    root.mkdir()
    git = Git(root, git_environment(workdir, credential), deadline, credential, _ssh_host(ref))
    git.run(["init", "-q"], "git init")
    git.run(
        [
            "fetch",
            "-q",
            "--depth",
            "1",
            "--no-tags",
            "--no-recurse-submodules",
            "--",
            *[ref.url, commit],
        ],
        f"fetching {commit[:12]} from {ref.url}",
    )
    git.run(["checkout", "-q", "--detach", "FETCH_HEAD"], "git checkout")
    got = git.run(["rev-parse", "HEAD"], "git rev-parse").strip()
    if got != commit:
        raise SourceUnreachable(f"{ref.url} gave commit {got} when asked for {commit}")
    check_tree(root, limits, f"{ref.url} at {commit[:12]}")
    return FetchedTree(root=root, commit=commit)
