"""Standing sources as pure data: backoff, when a failure is recorded, who may publish a
taskset, which hosts are allowed, and credentials that never show."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from events.catalog import Placement, SourceAdded, SourceFailed
from sources.credentials import Credential, CredentialStore
from sources.errors import CredentialsNotFound, InvalidSourceReference
from sources.git_fetch import git_environment
from sources.references import Endpoint, HostAllowList, SourceRef, check_reference, endpoint_of
from sources.watch import (
    SourceRecord,
    SourcesState,
    after_success,
    decide_add,
    decide_failure,
    due,
    evolve,
    retry_delay,
)

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def added(name: str = "web", taskset: str = "web", interval_s: float = 300.0) -> SourceAdded:
    return SourceAdded(
        id=f"id-{name}-{interval_s}",
        occurred_at=NOW,
        actor="user:ops",
        source=name,
        taskset=taskset,
        kind="helm-repo",
        url="https://charts.example.com",
        chart="web",
        chart_version="^1.2",
        interval_s=interval_s,
        placement=Placement(selector="env=prod"),
    )


@pytest.mark.parametrize(
    ("attempts", "interval", "delay"),
    [(0, 300, 300), (1, 300, 5), (2, 300, 10), (3, 300, 20), (7, 300, 300), (4, 30, 30)],
)
def test_retries_back_off_doubling_up_to_the_interval(
    attempts: int, interval: float, delay: float
) -> None:
    assert retry_delay(attempts, interval) == delay


def test_a_failure_is_recorded_once_per_reason_and_retried_later_each_time() -> None:
    record = SourceRecord(definition=added())
    first, events = decide_failure(
        record, reason="cannot reach", stage="fetch", candidate="", now=NOW
    )
    assert [type(e) for e in events] == [SourceFailed]
    assert isinstance(events[0], SourceFailed)
    assert (events[0].attempts, events[0].retry_in_s, events[0].stage) == (1, 5.0, "fetch")
    assert first.next_check_at == NOW + timedelta(seconds=5)
    assert not due(first, NOW + timedelta(seconds=4))
    assert due(first, NOW + timedelta(seconds=5))
    second, again = decide_failure(
        first, reason="cannot reach", stage="fetch", candidate="", now=NOW
    )
    assert again == []
    assert (second.attempts, second.next_check_at) == (2, NOW + timedelta(seconds=10))
    third, other = decide_failure(
        second, reason="does not render", stage="render", candidate="1.2.4", now=NOW
    )
    assert len(other) == 1
    assert isinstance(other[0], SourceFailed)
    assert (other[0].attempts, other[0].stage, other[0].candidate) == (3, "render", "1.2.4")
    healed = after_success(third, now=NOW, provenance=None, version=4)
    assert (healed.attempts, healed.last_reason, healed.last_version) == (0, "", 4)
    assert healed.next_check_at == NOW + timedelta(seconds=300)
    _, after_healing = decide_failure(
        healed, reason="cannot reach", stage="fetch", candidate="", now=NOW
    )
    assert len(after_healing) == 1, "a failure after a success is news again"


def test_two_sources_cannot_publish_the_same_taskset() -> None:
    with pytest.raises(InvalidSourceReference, match="already published by source other"):
        decide_add(added("web"), existing=None, taskset_owner="other")
    assert decide_add(added("web"), existing=None, taskset_owner="web") == [added("web")]


def test_adding_the_same_definition_again_changes_nothing_and_a_new_interval_does() -> None:
    record = SourceRecord(definition=added())
    same = msgspec.structs.replace(added(), id="another-id", occurred_at=NOW + timedelta(hours=1))
    assert decide_add(same, existing=record, taskset_owner="web") == []
    assert decide_add(added(interval_s=60), existing=record, taskset_owner="web") != []


def test_an_interval_out_of_range_is_refused_naming_the_range() -> None:
    with pytest.raises(InvalidSourceReference, match=r"between 1s and 604800s, got 0\.5s"):
        decide_add(added(interval_s=0.5), existing=None, taskset_owner=None)


def test_the_fold_keeps_definitions_and_the_last_failure_reason() -> None:
    state = SourcesState()
    evolve(state, added())
    failed = SourceFailed(
        id="f", occurred_at=NOW, actor="source:web", source="web", taskset="web", reason="x"
    )
    evolve(state, failed)
    assert state.sources["web"].last_reason == "x"
    assert state.sources["web"].reference == SourceRef(
        kind="helm-repo", url="https://charts.example.com", chart="web", version="^1.2"
    )


@pytest.mark.parametrize(
    ("entries", "endpoint", "allowed"),
    [
        (["charts.example.com"], Endpoint("charts.example.com", 443), True),
        (["Charts.Example.com"], Endpoint("charts.example.com", None), True),
        (["charts.example.com:8443"], Endpoint("charts.example.com", 443), False),
        (["charts.example.com:8443"], Endpoint("charts.example.com", 8443), True),
        (["example.com"], Endpoint("charts.example.com", None), False),
        ([], Endpoint("127.0.0.1", 80), False),
    ],
)
def test_the_allow_list_matches_host_and_port_exactly(
    entries: list[str], endpoint: Endpoint, allowed: bool
) -> None:
    assert HostAllowList.parse(entries).allows(endpoint) is allowed


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("git@github.example:org/repo.git", "github.example"),
        ("ssh://git@Git.Example:2222/org/repo", "git.example"),
        ("https://git.example/org/repo.git", "git.example"),
    ],
)
def test_the_host_of_a_git_url_is_what_git_would_contact(url: str, host: str) -> None:
    assert endpoint_of(check_reference(SourceRef(kind="git", url=url))).host == host


def test_a_url_with_credentials_in_it_is_not_how_credentials_are_given() -> None:
    ref = SourceRef(kind="helm-repo", url="https://user:pw@charts.example.com", chart="x")
    with pytest.raises(InvalidSourceReference, match="store credentials"):
        check_reference(ref)


def test_credentials_are_stored_owner_only_and_listed_without_secrets(tmp_path: Path) -> None:
    store = CredentialStore.in_data_dir(tmp_path)
    store.set("deploy", Credential(kind="basic", username="bot", password="hunter2-secret"))
    assert os.stat(store.path).st_mode & 0o777 == 0o600
    assert store.get("deploy").password == "hunter2-secret"
    summaries = store.summaries()
    assert [(s.name, s.kind, s.username) for s in summaries] == [("deploy", "basic", "bot")]
    assert "hunter2" not in repr(summaries)
    with pytest.raises(CredentialsNotFound, match="fleetbus source credentials set other"):
        store.get("other")
    with pytest.raises(InvalidSourceReference, match="user name and a password"):
        store.set("bad", Credential(kind="basic", username="bot"))


def test_scrubbing_masks_passwords_tokens_and_every_line_of_a_key() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH"
    credential = Credential(kind="ssh-key", ssh_key=key)
    text = credential.scrub("ssh said: b3BlbnNzaC1rZXktdjEAAAAA is bad")
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in text
    assert Credential(kind="token", token="tok-12345").scrub("got tok-12345") == "got ***"


def test_git_gets_credentials_in_its_environment_and_a_key_file_only_it_may_read(
    tmp_path: Path,
) -> None:
    basic = git_environment(tmp_path, Credential(kind="basic", username="u", password="p"))
    assert basic["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    assert basic["GIT_CONFIG_VALUE_0"] == "Authorization: Basic dTpw"
    assert basic["GIT_ALLOW_PROTOCOL"] == "http:https:git:ssh"
    token = git_environment(tmp_path, Credential(kind="token", token="abc"))
    assert token["GIT_CONFIG_VALUE_0"] == "Authorization: Bearer abc"
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
    ssh = git_environment(tmp_path, Credential(kind="ssh-key", ssh_key=key))
    assert f"-i {tmp_path / 'ssh-key'}" in ssh["GIT_SSH_COMMAND"]
    assert "StrictHostKeyChecking=yes" in ssh["GIT_SSH_COMMAND"]
    assert "-F none" in ssh["GIT_SSH_COMMAND"], "no SSH configuration file may loosen the checks"
    assert os.stat(tmp_path / "ssh-key").st_mode & 0o777 == 0o600
    assert key not in ssh["GIT_SSH_COMMAND"]
