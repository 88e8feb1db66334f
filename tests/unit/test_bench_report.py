"""The benchmark framework's pure parts: percentiles, ratios, verdicts, /proc, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.figure import FigureResult, Metric, Target, format_number
from bench.hubproc import REPO, describe_failure
from bench.machine import MachineInfo, parse_cpu_model, parse_mem_total_gib
from bench.p1_convergence import stage_note
from bench.p2_convergence_10k import cpu_note, startup_split
from bench.p14_hub_memory import place
from bench.procstat import CLOCK_TICKS, cpu_percent_of_core, parse_cpu_ticks, parse_rss_kib
from bench.published import PUBLISHED
from bench.report import (
    REQUIRED_KEYS,
    RunReport,
    format_quantity,
    merge_outputs,
    render_markdown,
    results_document,
    write_outputs,
)
from bench.summary import median, percentile, rate, ratio, spread

MACHINE = MachineInfo(
    cpu_model="Test CPU @ 3.0GHz",
    cores=2,
    usable_cores=2,
    memory_gib=23.5,
    python="3.11.7",
    nats_server="nats-server: v2.15.1",
    nats_py="2.16.0",
    kernel="6.1.0",
    load_average=(0.1, 0.2, 0.3),
    commit="abc1234",
)


def test_percentiles_interpolate_between_ranks_like_numpy() -> None:
    samples = [1.0, 2.0, 3.0, 4.0]
    assert percentile(samples, 50) == pytest.approx(2.5)
    assert percentile(samples, 0) == 1.0
    assert percentile(samples, 100) == 4.0
    assert percentile(samples, 99) == pytest.approx(3.97)
    assert percentile([7.0], 99) == 7.0


def test_percentiles_do_not_depend_on_sample_order() -> None:
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert median([10.0, 0.0, 5.0, 20.0]) == pytest.approx(7.5)


def test_percentiles_of_nothing_or_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], 101)


def test_a_spread_summarises_count_percentiles_and_extremes() -> None:
    result = spread([float(i) for i in range(1, 101)])
    assert result.n == 100
    assert result.p50 == pytest.approx(50.5)
    assert result.p99 == pytest.approx(99.01)
    assert (result.min, result.max) == (1.0, 100.0)
    assert result.mean == pytest.approx(50.5)


def test_a_ratio_needs_both_numbers_and_a_positive_baseline() -> None:
    assert ratio(3.0, 1.5) == pytest.approx(2.0)
    assert ratio(None, 1.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None


def test_a_rate_over_no_time_is_a_bug_not_infinity() -> None:
    assert rate(1000, 0.5) == 2000.0
    with pytest.raises(ValueError, match="cannot compute a rate"):
        rate(10, 0.0)


@pytest.mark.parametrize(
    ("target", "value", "verdict"),
    [
        (Target(metric="p99_s", label="p99", bound=2.0, unit="s"), 1.9, "met"),
        (Target(metric="p99_s", label="p99", bound=2.0, unit="s"), 2.0, "met"),
        (Target(metric="p99_s", label="p99", bound=2.0, unit="s"), 2.1, "missed"),
        (Target(metric="cpu", label="cpu", bound=1.0, unit="%", strict=True), 1.0, "missed"),
        (Target(metric="r", label="r", bound=5e4, unit="/s", better="higher"), 5e4, "met"),
        (Target(metric="r", label="r", bound=5e4, unit="/s", better="higher"), 4e4, "missed"),
        (
            Target(metric="r", label="r", bound=5e4, unit="/s", better="higher"),
            None,
            "not measured",
        ),
    ],
)
def test_targets_judge_values_in_the_direction_that_is_better(
    target: Target, value: float | None, verdict: str
) -> None:
    assert target.judge(value) == verdict


def test_target_conditions_read_like_the_spec() -> None:
    assert Target(metric="a", label="a", bound=2.0, unit="s").condition == "≤ 2.00 s"
    assert Target(metric="a", label="a", bound=1.0, unit="%", strict=True).condition == "< 1.00 %"
    assert (
        Target(metric="a", label="a", bound=20000, unit="/s", better="higher").condition
        == "≥ 20,000 /s"
    )


def test_numbers_and_quantities_are_formatted_for_reading() -> None:
    assert format_number(1234567.8) == "1,234,568"
    assert format_number(0.0042) == "0.0042"
    assert format_quantity(0.4567, "s") == "457 ms"
    assert format_quantity(0.0042, "s") == "4.2 ms"
    assert format_quantity(12.5, "s") == "12.5 s"
    assert format_quantity(2.345, "x") == "2.35x"
    assert format_quantity(None, "s") == "—"


def test_proc_status_and_stat_texts_give_rss_and_cpu_ticks() -> None:
    status = "Name:\tpython\nVmPeak:\t 99999 kB\nVmRSS:\t   51200 kB\nThreads:\t3\n"
    assert parse_rss_kib(status) == 51200
    stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 3 0"
    assert parse_cpu_ticks(stat) == 175
    assert cpu_percent_of_core(ticks=5, seconds=10.0, ticks_per_second=100) == pytest.approx(0.5)


def test_cpu_and_memory_are_read_from_proc_texts() -> None:
    assert parse_cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert parse_cpu_model("nothing here") == "unknown"
    assert parse_mem_total_gib("MemTotal:       24576000 kB\n") == pytest.approx(23.4375)


def measured_figure() -> FigureResult:
    return FigureResult(
        key="P4",
        title="Event log",
        metrics=[
            Metric(
                key="append_per_s",
                label="appends/s",
                unit="/s",
                value=25000.0,
                better="higher",
                runs=[24000.0, 25000.0, 26000.0],
            ),
            Metric(
                key="fold_per_s",
                label="projector fold",
                unit="/s",
                value=None,
                better="higher",
                missing="the projector does not exist yet",
            ),
        ],
        targets=[
            Target(metric="append_per_s", label="appends", bound=20000, unit="/s", better="higher")
        ],
        method="One hub.",
        notes=["The client bounds it."],
        extra={"replay_events": 1000},
    )


def report_with(*figures: FigureResult, mode: str = "full") -> RunReport:
    return RunReport(
        mode=mode,
        started_at="2026-01-01T00:00:00+00:00",
        duration_s=600.0,
        machine=MACHINE,
        figures=list(figures),
    )


def test_results_json_has_every_promised_key_measured_or_not() -> None:
    missing = FigureResult(key="P3", title="Drift", not_measured="no controller yet")
    doc = results_document(report_with(measured_figure(), missing))
    for figure, keys in REQUIRED_KEYS.items():
        assert set(keys) <= set(doc[figure]), figure
    assert doc["P4"]["append_per_s"] == 25000.0
    assert doc["P4"]["fold_per_s"] is None
    assert doc["P4"]["missing"] == {"fold_per_s": "the projector does not exist yet"}
    assert doc["P4"]["runs"]["append_per_s"] == [24000.0, 25000.0, 26000.0]
    assert doc["P4"]["targets"][0]["verdict"] == "met"
    assert doc["P3"]["measured"] is False
    assert doc["P3"]["not_measured"] == "no controller yet"
    assert doc["P1"]["not_measured"] == "not run in this invocation"
    assert doc["machine"]["cpu_model"] == "Test CPU @ 3.0GHz"


def test_the_report_shows_targets_reasons_and_published_sources() -> None:
    missing = FigureResult(
        key="P3",
        title="Drift",
        targets=[Target(metric="p99_s", label="drift p99", bound=1.0, unit="s")],
        not_measured="no controller yet",
    )
    text = render_markdown(report_with(measured_figure(), missing), PUBLISHED)
    assert "| P4 | appends ≥ 20,000 /s | 25,000 /s | met |" in text
    assert "| P3 | drift p99 ≤ 1.00 s | not measured: no controller yet | — |" in text
    assert "not measured: the projector does not exist yet" in text
    assert "3 runs: median 25,000 /s" in text
    assert "Test CPU @ 3.0GHz" in text
    assert "**their hardware**" in text
    for item in PUBLISHED:
        assert item.source in text


def test_a_quick_report_says_it_is_not_the_one_to_quote() -> None:
    text = render_markdown(report_with(measured_figure(), mode="quick"), PUBLISHED)
    assert "Quick mode" in text
    assert "make bench-quick" in text


def test_every_published_figure_names_a_source_and_a_figure_of_ours() -> None:
    assert {item.project.split()[0] for item in PUBLISHED} >= {"Karmada", "Flux", "Argo", "Rancher"}
    for item in PUBLISHED:
        assert item.source.startswith("https://")
        assert item.closest in REQUIRED_KEYS


def test_a_convergence_breakdown_names_each_stage_with_its_percentiles() -> None:
    note = stage_note(
        1000,
        {"scheduled": [0.01, 0.02, 0.03], "applied": [1.0, 2.0, 3.0], "reported": [0.005]},
    )
    assert note.startswith("Where the time goes at 1,000 clusters:")
    assert "(scheduler): p50 20 ms" in note
    assert "(delivery, apply): p50 2.00 s, p99 2.98 s" in note
    assert "(publish; sourcing for leaf edges): p50 5.0 ms" in note


def test_a_stage_without_samples_is_left_out_of_the_breakdown() -> None:
    note = stage_note(100, {"scheduled": [0.1]})
    assert "scheduler" in note
    assert "sourcing" not in note


def test_a_failed_process_is_described_by_its_last_exception_and_our_frame() -> None:
    output = (
        "starting\n"
        "Traceback (most recent call last):\n"
        f'  File "{REPO}/fleetbus/edgehub.py", line 131, in start\n'
        "    await self.provisioning.wait_applied(last)\n"
        '  File "/usr/lib/python3.11/asyncio/timeouts.py", line 115, in __aexit__\n'
        "    raise TimeoutError from exc_val\n"
        "TimeoutError\n"
    )
    assert describe_failure(output) == "TimeoutError at fleetbus/edgehub.py:131 (start)"
    assert describe_failure("all good\nlast words\n") == "last words"
    assert describe_failure("") == "(no output)"


def test_the_update_cpu_note_orders_roles_by_use_and_sums_them() -> None:
    ticks = CLOCK_TICKS
    note = cpu_note({"scheduler": 3 * ticks, "hub's nats-server": 18 * ticks}, seconds=20.0)
    assert note.startswith("CPU used during the update (20.0 s of wall time, from /proc): ")
    assert note.index("hub's nats-server 18.0 s (90 % of a core)") < note.index(
        "scheduler 3.0 s (15 % of a core)"
    )
    assert "; 21.0 s in all of the " in note


def test_a_figure_measured_alone_is_merged_into_the_report_keeping_the_others(
    tmp_path: Path,
) -> None:
    markdown, results = tmp_path / "BENCHMARKS.md", tmp_path / "results.json"
    write_outputs(report_with(measured_figure()), PUBLISHED, markdown, results)
    alone = FigureResult(
        key="P7",
        title="Render",
        metrics=[Metric(key="render_ratio", label="render ratio", unit="x", value=1.2)],
        targets=[Target(metric="render_ratio", label="render", bound=1.5, unit="x")],
        method="Alone.",
    )
    merge_outputs(report_with(alone), markdown, results)
    merge_outputs(report_with(alone), markdown, results)
    text = markdown.read_text()
    assert text.count("## P7 — Render") == 1
    assert text.count("| P7 | render ≤ 1.50 x | 1.20x | met |") == 1
    assert "## P4 — Event log" in text
    assert text.index("## P7 — Render") < text.index("## Beside published figures")
    assert "Measured alone with `python -m bench --full --only P7 --merge`" in text
    document = json.loads(results.read_text())
    assert document["P7"]["render_ratio"] == 1.2
    assert document["P4"]["append_per_s"] == 25000.0


def test_the_start_up_split_is_read_from_the_hubs_log() -> None:
    log = (
        "INFO simulator.fleet: simulated fleet up: 4996 clusters (client) in 4 worker "
        "processes; registered in 2.1 s, provisioned in 41.3 s, connected in 12.5 s\n"
    )
    assert startup_split(log) == (2.1, 41.3, 12.5)
    assert startup_split("nothing about sims here") is None


def test_traced_lines_are_named_by_their_place_in_the_repository_or_a_package() -> None:
    assert place(str(REPO / "scheduler" / "state.py")) == "scheduler/state.py"
    site = "/x/.venv/lib/python3.11/site-packages/nats/js/client.py"
    assert place(site) == "nats/js/client.py"
    assert place("/usr/lib/python3.11/asyncio/events.py") == "asyncio/events.py"


def test_a_merged_target_row_goes_into_the_targets_table_not_a_figures_table(
    tmp_path: Path,
) -> None:
    markdown, results = tmp_path / "BENCHMARKS.md", tmp_path / "results.json"
    write_outputs(report_with(measured_figure()), PUBLISHED, markdown, results)
    table = FigureResult(
        key="P14",
        title="Memory",
        metrics=[Metric(key="held_mb", label="Python memory held", unit="MB", value=52.0)],
        method="Traced.",
    )
    merge_outputs(report_with(table), markdown, results)
    alone = FigureResult(
        key="P7",
        title="Render",
        metrics=[Metric(key="render_ratio", label="render ratio", unit="x", value=1.2)],
        targets=[Target(metric="render_ratio", label="render", bound=1.5, unit="x")],
        method="Alone.",
    )
    merge_outputs(report_with(alone), markdown, results)
    lines = markdown.read_text().splitlines()
    row = lines.index("| P7 | render ≤ 1.50 x | 1.20x | met |")
    assert row < lines.index("## P14 — Memory")
    assert lines[row - 1].startswith("| P")
