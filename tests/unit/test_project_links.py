"""The exports and imports that join a project's clusters to FLEET: exactly their own subjects."""

from __future__ import annotations

from access.project_links import account_links, project_reply_rights

KEYS = {"default": "AFLEET", "team-a": "ATEAMA", "team-b": "ATEAMB"}


def subjects(entries: tuple[tuple[tuple[str, object], ...], ...]) -> set[tuple[str, str, str]]:
    return {
        (str(e["type"]), str(e["subject"]), str(e.get("account", "")))
        for e in (dict(entry) for entry in entries)
    }


def test_default_project_clusters_need_no_links() -> None:
    assert account_links(["alpha", "beta"], KEYS.__getitem__) == {}
    assert project_reply_rights("alpha") == []


def test_each_project_account_imports_only_its_own_clusters_subjects() -> None:
    links = account_links(["team-a--east", "team-b--west", "alpha"], KEYS.__getitem__)
    assert set(links) == {"FLEET", "project-team-a", "project-team-b"}
    a_imports = subjects(links["project-team-a"].imports)
    assert a_imports == {
        ("service", "fleet.jsapi.team-a--east.>", "AFLEET"),
        ("service", "fleet.keys.team-a--east", "AFLEET"),
        ("service", "$JS.FC.DESIRED.>", "AFLEET"),
        ("stream", "fleet.sync.desired.team-a--east.>", "AFLEET"),
    }
    a_exports = subjects(links["project-team-a"].exports)
    assert a_exports == {
        ("service", "$JS.edge-team-a--east.API.>", ""),
        ("service", "$JS.FC.REPORTS-team-a--east.>", ""),
        ("stream", "fleet.sync.reports.team-a--east.>", ""),
        ("stream", "fleet.inventory.team-a--east", ""),
    }
    assert not any("team-b" in subject for _, subject, _ in a_imports | a_exports)
    fleet_imports = subjects(links["FLEET"].imports)
    assert ("stream", "fleet.inventory.team-b--west", "ATEAMB") in fleet_imports
    assert ("stream", "fleet.inventory.team-a--east", "ATEAMA") in fleet_imports
    # The default project's cluster is FLEET's own: never linked.
    assert not any("alpha" in s for _, s, _ in fleet_imports | subjects(links["FLEET"].exports))
    assert project_reply_rights("team-a--east") == ["_R_.>"]


def test_links_are_the_same_whatever_the_order_of_clusters() -> None:
    clusters = ["team-b--west", "team-a--east", "team-a--north"]
    assert account_links(clusters, KEYS.__getitem__) == account_links(
        list(reversed(clusters)), KEYS.__getitem__
    )
