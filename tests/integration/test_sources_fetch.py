"""Fetching sources from real servers on loopback: a Helm HTTP repository, the distribution
registry, and Git over git:// and http:// (git http-backend), through `sources.fetch`."""

from __future__ import annotations

from pathlib import Path

import pytest

from events.catalog import Provenance
from sources.credentials import Credential
from sources.errors import (
    HostNotAllowed,
    InvalidSourceReference,
    SourceEscapes,
    SourceTooLarge,
    SourceUnreachable,
)
from sources.fetch import FetchPolicy, fetch_source
from sources.limits import SourceLimits
from sources.references import HostAllowList, SourceRef
from tests.source_servers import (
    GitServer,
    HelmRepository,
    OciRegistry,
    git_server,
    helm_repository,
    make_chart,
    oci_registry,
    package_chart,
)

__all__ = ["git_server", "helm_repository", "oci_registry"]

LOOPBACK = FetchPolicy(allowed=HostAllowList.parse(["127.0.0.1"]))


def test_a_repository_chart_is_pulled_at_the_newest_version_in_the_constraint(
    helm_repository: HelmRepository, tmp_path: Path
) -> None:
    for version in ("1.2.0", "1.2.3", "2.0.0"):
        helm_repository.add(make_chart(tmp_path / "src", "web", version))
    ref = SourceRef(kind="helm-repo", url=helm_repository.url, chart="web", version="^1.2")
    (tmp_path / "work").mkdir()
    fetched = fetch_source(ref, tmp_path / "work", LOOPBACK)
    assert fetched is not None
    assert fetched.provenance.chart == "web"
    assert fetched.provenance.chart_version == "1.2.3"
    assert fetched.provenance.digest.startswith("sha256:")
    assert (fetched.path / "Chart.yaml").is_file()
    (tmp_path / "again").mkdir()
    assert fetch_source(ref, tmp_path / "again", LOOPBACK, known=fetched.provenance) is None


def test_a_chart_from_the_oci_registry_carries_the_registry_manifest_digest(
    oci_registry: OciRegistry, tmp_path: Path
) -> None:
    for version in ("0.9.0", "1.0.0"):
        oci_registry.push(
            package_chart(make_chart(tmp_path / "src", "api", version), tmp_path / "d")
        )
    ref = SourceRef(
        kind="oci", url=f"oci://{oci_registry.host}/charts/api", version="~0.9", plain_http=True
    )
    (tmp_path / "work").mkdir()
    fetched = fetch_source(ref, tmp_path / "work", LOOPBACK)
    assert fetched is not None
    assert (fetched.provenance.kind, fetched.provenance.chart_version) == ("oci", "0.9.0")
    assert fetched.provenance.digest.startswith("sha256:")


CHART_IN_GIT = {
    "charts/app/Chart.yaml": "apiVersion: v2\nname: app\nversion: 3.1.0\n{dependencies}",
    "charts/app/values.yaml": "greeting: hi\n",
    "charts/app/templates/cm.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a: b\n"
    ),
}


def chart_in_git(dependencies: str) -> dict[str, str]:
    return {k: v.replace("{dependencies}", dependencies) for k, v in CHART_IN_GIT.items()}


def test_dependencies_of_a_chart_from_git_are_resolved_by_helm(
    helm_repository: HelmRepository, git_server: GitServer, tmp_path: Path
) -> None:
    helm_repository.add(make_chart(tmp_path / "src", "common", "1.0.0"))
    git_server.create(
        "charts",
        chart_in_git(
            f"dependencies:\n- name: common\n  version: 1.0.0\n"
            f"  repository: {helm_repository.url}\n"
        ),
    )
    ref = SourceRef(kind="git", url=git_server.git_url("charts"), ref="main", path="charts/app")
    (tmp_path / "work").mkdir()
    fetched = fetch_source(ref, tmp_path / "work", LOOPBACK)
    assert fetched is not None
    assert sorted(p.name for p in (fetched.path / "charts").iterdir()) == ["common-1.0.0.tgz"]


def test_a_dependency_on_a_host_off_the_allow_list_is_refused(
    git_server: GitServer, tmp_path: Path
) -> None:
    git_server.create(
        "charts",
        chart_in_git(
            "dependencies:\n- name: common\n  version: 1.0.0\n"
            "  repository: https://charts.example.com/stable\n"
        ),
    )
    ref = SourceRef(kind="git", url=git_server.git_url("charts"), ref="main", path="charts/app")
    (tmp_path / "work").mkdir()
    with pytest.raises(HostNotAllowed, match=r"chart dependency common .*charts.example.com"):
        fetch_source(ref, tmp_path / "work", LOOPBACK)


def test_a_file_dependency_outside_the_repository_is_refused(
    git_server: GitServer, tmp_path: Path
) -> None:
    git_server.create(
        "charts",
        chart_in_git(
            "dependencies:\n- name: host\n  version: 1.0.0\n  repository: file://../../../etc\n"
        ),
    )
    ref = SourceRef(kind="git", url=git_server.git_url("charts"), ref="main", path="charts/app")
    (tmp_path / "work").mkdir()
    with pytest.raises(SourceEscapes, match=r"file://../../../etc, outside the repository"):
        fetch_source(ref, tmp_path / "work", LOOPBACK)


def test_a_host_off_the_allow_list_is_never_contacted(
    helm_repository: HelmRepository, tmp_path: Path
) -> None:
    helm_repository.add(make_chart(tmp_path / "src", "web", "1.0.0"))
    ref = SourceRef(kind="helm-repo", url=helm_repository.url, chart="web")
    policy = FetchPolicy(allowed=HostAllowList.parse(["charts.example.com"]))
    (tmp_path / "work").mkdir()
    before = helm_repository.counter.requests
    with pytest.raises(HostNotAllowed, match=r"127.0.0.1.*--source-host 127.0.0.1"):
        fetch_source(ref, tmp_path / "work", policy)
    assert helm_repository.counter.requests == before


def test_a_chart_over_the_size_limit_is_refused_naming_the_limit(
    helm_repository: HelmRepository, tmp_path: Path
) -> None:
    chart = make_chart(tmp_path / "src", "big", "1.0.0")
    (chart / "files.txt").write_text("x" * 50_000)
    helm_repository.add(chart)
    ref = SourceRef(kind="helm-repo", url=helm_repository.url, chart="big")
    policy = FetchPolicy(allowed=LOOPBACK.allowed, limits=SourceLimits(max_file_bytes=10_000))
    (tmp_path / "work").mkdir()
    with pytest.raises(SourceTooLarge, match=r"files.txt is 50,000 bytes, over the per-file limit"):
        fetch_source(ref, tmp_path / "work", policy)


def test_a_git_directory_is_fetched_at_the_commit_its_branch_points_at(
    git_server: GitServer, tmp_path: Path
) -> None:
    first = git_server.create("overlays", {"prod/kustomization.yaml": "resources: []\n"})
    ref = SourceRef(kind="git", url=git_server.git_url("overlays"), ref="main", path="prod")
    (tmp_path / "a").mkdir()
    fetched = fetch_source(ref, tmp_path / "a", LOOPBACK)
    assert fetched is not None
    assert fetched.provenance == Provenance(
        kind="git", url=ref.url, ref="main", commit=first, path="prod"
    )
    assert (fetched.path / "kustomization.yaml").is_file()
    (tmp_path / "b").mkdir()
    assert fetch_source(ref, tmp_path / "b", LOOPBACK, known=fetched.provenance) is None
    second = git_server.commit("overlays", {"prod/extra.yaml": "a: 1\n"})
    (tmp_path / "c").mkdir()
    again = fetch_source(ref, tmp_path / "c", LOOPBACK, known=fetched.provenance)
    assert again is not None
    assert again.provenance.commit == second != first


def test_git_over_http_needs_the_stored_credentials_and_never_echoes_them(
    tmp_path: Path,
) -> None:
    server = GitServer(tmp_path / "git", username="deploy", password="s3cret-pass-9f2")
    server.start()
    try:
        server.create("private", {"app/cm.yaml": "apiVersion: v1\nkind: ConfigMap\n"})
        ref = SourceRef(kind="git", url=server.http_url("private"), ref="main", path="app")
        (tmp_path / "a").mkdir()
        with pytest.raises(SourceUnreachable) as refused:
            fetch_source(ref, tmp_path / "a", LOOPBACK)
        wrong = Credential(kind="basic", username="deploy", password="wrong-pass-123")
        (tmp_path / "b").mkdir()
        with pytest.raises(SourceUnreachable) as wrong_refused:
            fetch_source(ref, tmp_path / "b", LOOPBACK, credential=wrong)
        assert "wrong-pass-123" not in str(wrong_refused.value)
        assert "could not read Username" in str(refused.value)
        right = Credential(kind="basic", username="deploy", password="s3cret-pass-9f2")
        (tmp_path / "c").mkdir()
        fetched = fetch_source(ref, tmp_path / "c", LOOPBACK, credential=right)
        assert fetched is not None
        assert (fetched.path / "cm.yaml").is_file()
    finally:
        server.stop()


def test_git_over_http_takes_a_bearer_token(tmp_path: Path) -> None:
    server = GitServer(tmp_path / "git", token="tok-5d1c0a")
    server.start()
    try:
        server.create("private", {"app/cm.yaml": "apiVersion: v1\nkind: ConfigMap\n"})
        ref = SourceRef(kind="git", url=server.http_url("private"), ref="main", path="app")
        (tmp_path / "a").mkdir()
        fetched = fetch_source(
            ref, tmp_path / "a", LOOPBACK, credential=Credential(kind="token", token="tok-5d1c0a")
        )
        assert fetched is not None
    finally:
        server.stop()


def test_a_git_symlink_leaving_the_repository_is_refused(
    git_server: GitServer, tmp_path: Path
) -> None:
    git_server.create("links", {"app/cm.yaml": "a: 1\n"})
    work = git_server.root / "links-work"
    (work / "app" / "passwd").symlink_to("/etc/passwd")
    git_server.commit("links", {})
    ref = SourceRef(kind="git", url=git_server.git_url("links"), ref="main", path="app")
    (tmp_path / "a").mkdir()
    with pytest.raises(SourceEscapes, match="passwd is a symbolic link to '/etc/passwd'"):
        fetch_source(ref, tmp_path / "a", LOOPBACK)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (SourceRef(kind="git", url="file:///etc", ref="main"), "https://, http://, git://"),
        (SourceRef(kind="git", url="ext::sh -c id", ref="main"), "spaces"),
        (SourceRef(kind="git", url="git://127.0.0.1/x.git", path="../up"), "inside the repository"),
        (SourceRef(kind="git", url="git://127.0.0.1/x.git", ref="--upload-pack=id"), "git ref"),
        (SourceRef(kind="oci", url="oci://127.0.0.1/charts/x:1.0"), "--version"),
        (SourceRef(kind="helm-repo", url="ftp://127.0.0.1/", chart="x"), "https://"),
        (SourceRef(kind="helm-repo", url="http://127.0.0.1/"), "chart name"),
    ],
)
def test_malformed_references_are_refused_before_anything_is_contacted(
    ref: SourceRef, message: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidSourceReference, match=message):
        fetch_source(ref, tmp_path, LOOPBACK)


def test_a_private_helm_repository_takes_basic_credentials_and_never_echoes_them(
    tmp_path: Path,
) -> None:
    repository = HelmRepository(tmp_path / "private", username="ci", password="repo-pass-71c")
    repository.start()
    try:
        repository.add(make_chart(tmp_path / "src", "web", "1.0.0"))
        ref = SourceRef(kind="helm-repo", url=repository.url, chart="web")
        (tmp_path / "a").mkdir()
        with pytest.raises(SourceUnreachable, match="cannot read the index"):
            fetch_source(ref, tmp_path / "a", LOOPBACK)
        wrong = Credential(kind="basic", username="ci", password="not-the-pass-42")
        (tmp_path / "b").mkdir()
        with pytest.raises(SourceUnreachable) as refused:
            fetch_source(ref, tmp_path / "b", LOOPBACK, credential=wrong)
        assert "not-the-pass-42" not in str(refused.value)
        right = Credential(kind="basic", username="ci", password="repo-pass-71c")
        (tmp_path / "c").mkdir()
        fetched = fetch_source(ref, tmp_path / "c", LOOPBACK, credential=right)
        assert fetched is not None
        assert fetched.provenance.chart_version == "1.0.0"
        token = Credential(kind="token", token="tok")
        (tmp_path / "d").mkdir()
        with pytest.raises(InvalidSourceReference, match="Helm repositories take basic"):
            fetch_source(ref, tmp_path / "d", LOOPBACK, credential=token)
    finally:
        repository.stop()


def test_a_private_registry_takes_a_login_and_refuses_wrong_credentials_clearly(
    tmp_path: Path,
) -> None:
    registry = OciRegistry(tmp_path / "oci", username="puller", password="reg-pass-5e81b")
    registry.start()
    try:
        registry.push(package_chart(make_chart(tmp_path / "src", "api", "1.4.0"), tmp_path / "d"))
        ref = SourceRef(
            kind="oci", url=f"oci://{registry.host}/charts/api", version="1.4.0", plain_http=True
        )
        (tmp_path / "a").mkdir()
        with pytest.raises(
            SourceUnreachable, match=r"registry 127.0.0.1:\d+ needs credentials: store them"
        ) as anonymous:
            fetch_source(ref, tmp_path / "a", LOOPBACK)
        wrong = Credential(kind="basic", username="puller", password="not-it-8c2d1")
        (tmp_path / "b").mkdir()
        with pytest.raises(SourceUnreachable) as refused:
            fetch_source(ref, tmp_path / "b", LOOPBACK, credential=wrong)
        message = str(refused.value)
        assert f"registry {registry.host} refused the login of user 'puller'" in message
        assert "not-it-8c2d1" not in message
        assert "reg-pass-5e81b" not in str(anonymous.value)
        right = Credential(kind="basic", username="puller", password="reg-pass-5e81b")
        (tmp_path / "c").mkdir()
        fetched = fetch_source(ref, tmp_path / "c", LOOPBACK, credential=right)
        assert fetched is not None
        assert fetched.provenance.chart_version == "1.4.0"
        assert fetched.provenance.digest.startswith("sha256:")
        login = tmp_path / "c" / "registry-config.json"
        assert not login.exists() or login.stat().st_mode & 0o077 == 0, "the login file is 0600"
        token = Credential(kind="token", username="puller", token="reg-pass-5e81b")
        (tmp_path / "e").mkdir()
        assert fetch_source(ref, tmp_path / "e", LOOPBACK, credential=token) is not None, (
            "a token is the password of a registry login"
        )
    finally:
        registry.stop()
