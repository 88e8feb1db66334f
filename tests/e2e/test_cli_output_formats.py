"""Every read command in every output format, against `fleetbus up`.

`-o json` and `-o yaml` carry the same document; `-o table` starts with an upper-case header and
`-o wide` shows more columns than `table`; `status --watch` prints again when the status changes;
`cluster ls --selector` and `status --selector` filter by labels and refuse a bad selector clearly.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.e2e.test_hub_process import FLEETBUS, Hub, hub
from tests.eventually import wait_until

__all__ = ["hub"]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

READ_COMMANDS: list[tuple[str, ...]] = [
    ("status",),
    ("status", "board"),
    ("events",),
    ("events", "--cluster", "edge-1"),
    ("cluster", "ls"),
    ("cluster", "ls", "--all"),
    ("override", "ls", "board"),
    ("blueprint", "ls"),
    ("blueprint", "show", "base"),
    ("token", "ls"),
    ("notify", "ls"),
    ("notify", "status"),
]


def header_words(text: str) -> list[str]:
    first = text.splitlines()[0]
    return first.split()


def prepared(hub: Hub, tmp_path: Path) -> None:
    hub.start()
    for name, label in (("edge-1", "env=prod"), ("edge-2", "env=dev")):
        done = hub.fleetbus("cluster", "register", name, "--label", label)
        assert done.returncode == 0, done.stderr
    published = hub.fleetbus(
        "publish", str(EXAMPLES / "yaml" / "status-board"), "--name", "board", "--selector", "env"
    )
    assert published.returncode == 0, published.stderr
    stack = tmp_path / "base.yaml"
    stack.write_text("name: base\nselector: env=prod\nentries:\n  - taskset: board\n")
    assert hub.fleetbus("blueprint", "publish", str(stack)).returncode == 0
    added = hub.fleetbus("notify", "add", "hook", "--url", "http://127.0.0.1:9/h")
    assert added.returncode == 0, added.stderr

    def scheduled() -> bool:
        done = hub.fleetbus("status", "board", "-o", "json")
        return done.returncode == 0 and len(json.loads(done.stdout)["status"]) == 2

    wait_until(scheduled, "board scheduled on both clusters", within=60)


def test_every_read_command_in_every_format(hub: Hub, tmp_path: Path) -> None:
    prepared(hub, tmp_path)
    for command in READ_COMMANDS:
        outputs = {}
        for output in ("json", "yaml", "table", "wide"):
            done = hub.fleetbus(*command, "-o", output)
            assert done.returncode == 0, (command, output, done.stderr)
            assert done.stdout.strip(), (command, output)
            outputs[output] = done.stdout
        document = json.loads(outputs["json"])
        assert yaml.safe_load(outputs["yaml"]) == document, command
        if command[:2] == ("blueprint", "show"):
            assert outputs["table"].startswith("blueprint base v1"), outputs["table"]
            assert "pinned=" in outputs["wide"]
            continue
        table, wide = header_words(outputs["table"]), header_words(outputs["wide"])
        assert table, command
        assert all(word.isupper() for word in table), (command, table)
        assert len(wide) > len(table), (command, table, wide)
        assert wide[: len(table) - 1] == table[: len(table) - 1], (command, table, wide)

    for output in ("json", "yaml"):
        done = hub.fleetbus("state", "--cluster", "edge-1", "-o", output)
        assert done.returncode == 0, done.stderr
    refused = hub.fleetbus("state", "--cluster", "edge-1", "-o", "table")
    assert refused.returncode == 2
    assert "invalid choice: 'table'" in refused.stderr
    check_show_lists_and_documents(hub)


def test_cluster_ls_and_status_filter_clusters_by_selector(hub: Hub, tmp_path: Path) -> None:
    prepared(hub, tmp_path)
    done = hub.fleetbus("cluster", "ls", "--selector", "env=prod", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert [c["name"] for c in json.loads(done.stdout)] == ["edge-1"]
    done = hub.fleetbus("cluster", "ls", "-l", "env in (prod,dev)", "-o", "json")
    assert [c["name"] for c in json.loads(done.stdout)] == ["edge-1", "edge-2"]
    bad = hub.fleetbus("cluster", "ls", "--selector", "env==(", "-o", "json")
    assert bad.returncode == 2, bad.stdout
    assert "selector" in bad.stderr
    assert "Traceback" not in bad.stderr

    done = hub.fleetbus("status", "board", "--selector", "env=dev", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert [row["cluster"] for row in json.loads(done.stdout)["status"]] == ["edge-2"]
    done = hub.fleetbus("status", "-l", "env", "-o", "table")
    assert {line.split()[1] for line in done.stdout.splitlines()[1:3]} == {"edge-1", "edge-2"}
    done = hub.fleetbus("status", "-l", "env=qa", "-o", "json")
    assert json.loads(done.stdout)["status"] == []
    bad = hub.fleetbus("status", "--selector", "env in (", "-o", "json")
    assert bad.returncode == 2, bad.stdout
    assert "selector" in bad.stderr
    assert not bad.stdout
    assert "Traceback" not in bad.stderr

    patch = tmp_path / "patch.yaml"
    patch.write_text(
        "- target: {kind: ConfigMap, name: board-page, namespace: status-board}\n"
        "  mergePatch: {metadata: {annotations: {edited: 'yes'}}}\n"
    )
    for name, where in (("one", ("--cluster", "edge-1")), ("devs", ("--selector", "env=dev"))):
        done = hub.fleetbus(
            "override", "set", "board", "--name", name, *where, "--patch", str(patch)
        )
        assert done.returncode == 0, done.stderr

    def overrides_for(selector: str) -> list[str]:
        done = hub.fleetbus("override", "ls", "board", "-l", selector, "-o", "json")
        assert done.returncode == 0, done.stderr
        return [o["name"] for o in json.loads(done.stdout)]

    assert overrides_for("env=prod") == ["one"], "edge-1's own override"
    assert overrides_for("env=dev") == ["devs"], "the selector matches edge-2"
    assert sorted(overrides_for("env")) == ["devs", "one"]
    assert overrides_for("env=qa") == []

    def clusters_of_events(selector: str) -> set[str]:
        done = hub.fleetbus("events", "--selector", selector, "-o", "json")
        assert done.returncode == 0, done.stderr
        records = json.loads(done.stdout)
        assert records, selector
        return {str(r["event"].get("cluster")) for r in records if r["event"].get("cluster")}

    assert clusters_of_events("env=prod") == {"edge-1"}
    assert clusters_of_events("env=dev") == {"edge-2"}
    bad = hub.fleetbus("events", "-l", "env in (", "-o", "json")
    assert bad.returncode == 2, bad.stdout
    assert "invalid selector" in bad.stderr
    assert not bad.stdout


def test_status_watch_prints_again_when_the_status_changes(hub: Hub, tmp_path: Path) -> None:
    prepared(hub, tmp_path)
    command = [*FLEETBUS, "status", "--watch", "--interval", "0.2", "-o", "json"]
    with subprocess.Popen(
        [*command, "--data-dir", str(hub.data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as watcher:
        try:
            assert watcher.stdout is not None
            first = json.loads(watcher.stdout.readline())
            assert {row["cluster"] for row in first["status"]} == {"edge-1", "edge-2"}
            done = hub.fleetbus("cluster", "register", "edge-3", "--label", "env=qa")
            assert done.returncode == 0, done.stderr
            second = json.loads(watcher.stdout.readline())
            clusters = {row["cluster"] for row in second["status"]}
            assert clusters == {"edge-1", "edge-2", "edge-3"}
            assert watcher.poll() is None, "still watching"
        finally:
            watcher.kill()


LISTS_IN_EVERY_FORMAT: list[tuple[str, ...]] = [
    ("keys", "ls"),
    ("snapshot", "ls"),
    ("source", "ls"),
    ("source", "credentials", "ls"),
]
DOCUMENTS: list[tuple[str, ...]] = [
    ("override", "preview", "board", "--cluster", "edge-1"),
    ("blueprint", "diff", "base"),
]


def check_show_lists_and_documents(hub: Hub) -> None:
    """cluster show, keys, snapshots, sources, credentials, diffs and previews: every format."""
    shown = {
        output: hub.fleetbus("cluster", "show", "edge-1", "-o", output)
        for output in ("json", "yaml", "table", "wide")
    }
    assert all(done.returncode == 0 for done in shown.values()), shown
    document = json.loads(shown["json"].stdout)
    assert yaml.safe_load(shown["yaml"].stdout) == document
    assert document["cluster"]["name"] == "edge-1"
    assert [cell["taskset"] for cell in document["cells"]] == ["board"]
    table = shown["table"].stdout
    assert table.startswith("cluster edge-1  (registered ")
    assert "  labels:      env=prod" in table
    assert "  controller:  not reported" in table
    assert "TASKSET" in table
    assert "board" in table
    assert "DRIFT" in shown["wide"].stdout
    assert "DRIFT" not in table
    missing = hub.fleetbus("cluster", "show", "nowhere")
    assert missing.returncode != 0
    assert "nowhere" in missing.stderr
    assert "Traceback" not in missing.stderr

    for command in LISTS_IN_EVERY_FORMAT:
        outputs = {}
        for output in ("json", "yaml", "table", "wide"):
            done = hub.fleetbus(*command, "-o", output)
            assert done.returncode == 0, (command, output, done.stderr)
            outputs[output] = done.stdout
        assert yaml.safe_load(outputs["yaml"]) == json.loads(outputs["json"]), command
        words = header_words(outputs["table"])
        assert words, command
        assert words[0].isupper() or words[0] == "key-encryption", (command, words)
    for command in DOCUMENTS:
        as_json = hub.fleetbus(*command, "-o", "json")
        as_yaml = hub.fleetbus(*command, "-o", "yaml")
        assert as_json.returncode == 0, (command, as_json.stderr)
        assert yaml.safe_load(as_yaml.stdout) == json.loads(as_json.stdout), command
        assert hub.fleetbus(*command).returncode == 0, command
