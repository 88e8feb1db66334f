"""The controller installs its CRDs from `cluster_controller/crds/compiled.json`: it must hold
exactly what the YAML sources (also the edge chart's `crds/`) say."""

from __future__ import annotations

from pathlib import Path

from cluster_controller.crds import crd_manifests, crd_manifests_from_yaml, write_compiled


def test_the_compiled_crds_are_what_the_yaml_sources_say() -> None:
    assert crd_manifests() == crd_manifests_from_yaml(), (
        "cluster_controller/crds/compiled.json is stale: run `python -m cluster_controller.crds`"
    )


def test_the_compiled_crds_are_written_from_the_yaml(tmp_path: Path) -> None:
    written = write_compiled(tmp_path)

    assert (
        written.read_text()
        == (
            Path(__file__).resolve().parents[2] / "cluster_controller" / "crds" / "compiled.json"
        ).read_text()
    )
