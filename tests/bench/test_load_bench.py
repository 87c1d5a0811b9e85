"""`vivace bench load`: orchestration on the FakeBackend, and one small run on the real engine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.test_cli import VIVACE, cli_env
from vivace_bench.load_bench import add_ratios, compare_auto, questions, run_bench
from vivace.runtime.fake import FakeBackend
from vivace.runtime.limits import InFlightLimiter, LimitedBackend
from vivace.runtime.load import ledger_of

def responder(request) -> str:
    if request.tag.endswith("/skeleton"):
        return "1. Alpha point\n2. Beta point\n3. Gamma point"
    return "A short answer of a few words."


# The skeleton's own three points: a 32-token budget would plan two (vivace.agents.sot.length_plan).
OPTS = {"max_tokens": 32, "temperature": 0.0, "repetition_penalty": 1.0, "max_points": 4, "length_plan": False}


def test_questions_cycle_through_the_bundled_set() -> None:
    qs = questions(50)
    assert len(qs) == 50 and qs[45] == qs[0] and len(set(qs)) == 45


def test_levels_respect_the_cap_and_report_from_traces(run) -> None:
    limiter = InFlightLimiter(3)  # smaller than the SoT fan-out: the cap, not the tasks, bounds requests
    backend = LimitedBackend(FakeBackend(responder, latency_s=0.02, per_token_s=0.001), limiter)
    report = run(run_bench(backend, 6, [1, 4], ["normal", "sot"], OPTS))
    normal, sot = report["series"]["normal"], report["series"]["sot"]
    assert [r["concurrency"] for r in normal] == [1, 4]
    assert normal[0]["peak_in_flight"] == 1  # one task at a time, one call per normal task
    assert normal[1]["peak_in_flight"] == 3  # four tasks want four slots; the cap allows three
    assert sot[0]["peak_in_flight"] == 3  # one SoT task fans out to its three points
    assert all(r["peak_in_flight"] <= 3 for r in sot)
    for r in normal + sot:
        assert r["tasks"] == 6 and r["p50_s"] <= r["p95_s"] and r["tasks_per_min"] > 0
        assert r["kv_usage_peak"] is None  # the fake backend exposes no KV stats
    assert all(r["sot_runs"] == 6 for r in sot) and all(r["sot_runs"] == 0 for r in normal)
    assert normal[0]["speedup_vs_1"] == 1.0 and normal[1]["speedup_vs_1"] > 1.0
    assert normal[1]["length_ratio_vs_1"] == 1.0  # the fake answers do not change with batching
    assert all(r["same_answer_vs_1"] == 1.0 and r["failed_runs"] == 0 and "_answers" not in r for r in normal + sot)
    assert list(report["targets"]) == ["normal_c16_tasks_per_min>=5x_c1"] and report["targets"]["normal_c16_tasks_per_min>=5x_c1"] is None


def test_auto_series_fans_out_only_into_free_slots(run) -> None:
    """Same tasks, same cap: auto is measured beside normal and sot, and its fan-out never queues at the cap."""
    limiter = InFlightLimiter(3)
    backend = LimitedBackend(FakeBackend(responder, latency_s=0.02, per_token_s=0.001), limiter)
    report = run(run_bench(backend, 6, [1, 4], ["normal", "sot", "auto"], OPTS))
    auto = report["series"]["auto"]
    assert [r["concurrency"] for r in auto] == [1, 4] and all(r["tasks"] == 6 and r["failed_runs"] == 0 for r in auto)
    # C=1: the batch is empty, the router's SoT questions keep SoT with the 3 points the cap allows (of 4).
    assert auto[0]["sot_runs"] == 6 and auto[0]["load_changed_runs"] == 6  # all six capped at 3 points
    # C=4: four tasks decide at once; with 3 slots at most one can fan out, the others decode normally.
    assert auto[1]["sot_runs"] <= 2 and auto[1]["load_changed_runs"] >= 4
    assert all(r["peak_in_flight"] <= 3 for r in auto) and ledger_of(limiter).claimed == 0
    levels = report["auto_vs_best"]
    assert [c["concurrency"] for c in levels] == [1, 4]
    for c in levels:
        assert c["best_tasks_per_min"] == max(report["series"][s][[1, 4].index(c["concurrency"])]["tasks_per_min"] for s in ("normal", "sot"))
        assert c["throughput_ok"] == (c["auto_tasks_per_min"] >= c["best_tasks_per_min"])


def test_repeats_report_the_median_of_each_level(run) -> None:
    backend = LimitedBackend(FakeBackend(responder, latency_s=0.01), InFlightLimiter(4))
    report = run(run_bench(backend, 3, [2], ["normal", "auto"], OPTS, repeats=3))
    assert report["repeats"] == 3
    for rows in report["series"].values():
        (row,) = rows
        assert len(row["repeats"]) == 3 and row["failed_runs"] == 0
        assert row["tasks_per_min"] == sorted(r["tasks_per_min"] for r in row["repeats"])[1]
        assert row["p50_s"] == sorted(r["p50_s"] for r in row["repeats"])[1]


def test_compare_auto_takes_the_better_of_normal_and_sot_per_level() -> None:
    row = lambda tpm, p50: {"concurrency": 4, "tasks_per_min": tpm, "p50_s": p50}  # noqa: E731
    out = compare_auto({"normal": [row(60.0, 3.0)], "sot": [row(30.0, 2.0)], "auto": [row(61.0, 2.5)]})
    assert out == [{"concurrency": 4, "auto_tasks_per_min": 61.0, "best_tasks_per_min": 60.0, "auto_p50_s": 2.5,
                    "best_p50_s": 2.0, "throughput_ok": True, "p50_ok": False, "throughput_ratio": 61.0 / 60.0,
                    "p50_ratio": 1.25}]
    assert compare_auto({"normal": [row(60.0, 3.0)]}) == []


def test_ratios_without_a_c1_level_are_absent() -> None:
    rows = [{"concurrency": 8, "tasks_per_min": 10.0, "mean_output_tokens": 5.0, "_answers": ["a"]}]
    add_ratios(rows)
    assert rows[0]["speedup_vs_1"] is None and rows[0]["length_ratio_vs_1"] is None and rows[0]["same_answer_vs_1"] is None


def test_same_answer_compares_each_task_with_its_c1_answer() -> None:
    rows = [{"concurrency": 1, "tasks_per_min": 2.0, "mean_output_tokens": 4.0, "_answers": ["a", "b", "c", "d"]},
            {"concurrency": 8, "tasks_per_min": 8.0, "mean_output_tokens": 5.0, "_answers": ["a", "b", "x", "c"]}]
    add_ratios(rows)
    assert rows[1]["speedup_vs_1"] == 4.0 and rows[1]["length_ratio_vs_1"] == 1.25
    assert rows[0]["same_answer_vs_1"] == 1.0 and rows[1]["same_answer_vs_1"] == 0.5  # by task, not as a set
    assert all("_answers" not in r for r in rows)


@pytest.mark.parametrize("flag", [["--concurrency", "0"], ["--repeats", "0"]])
def test_bad_levels_are_one_line(tmp_path: Path, vivace_home: Path, flag: list[str]) -> None:
    proc = subprocess.run([VIVACE, "bench", "load", *flag, "--out", str(tmp_path)],
                          capture_output=True, text=True, env=cli_env(vivace_home), timeout=120)
    assert proc.returncode == 2 and "at least 1" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.engine
def test_small_real_run_writes_a_consistent_report(tmp_path: Path, vivace_home: Path, model_dir: Path) -> None:
    out = tmp_path / "load"
    proc = subprocess.run(
        [VIVACE, "bench", "load", "--tasks", "2", "--concurrency", "1", "2", "--max-tokens", "16", "--out", str(out)],
        capture_output=True, text=True, env=cli_env(vivace_home), timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["bench"] == "load" and report["backend"] == "vllm"
    for name in ("normal", "sot", "auto"):
        rows = report["series"][name]
        assert [r["concurrency"] for r in rows] == [1, 2]
        for r in rows:
            assert r["tasks"] == 2 and 0 < r["p50_s"] <= r["p95_s"] and r["tasks_per_min"] > 0
            assert 1 <= r["peak_in_flight"] <= r["in_flight_cap"]
            assert r["kv_usage_peak"] is not None and 0 <= r["kv_usage_mean"] <= r["kv_usage_peak"] <= 1
            assert r["failed_runs"] == 0 and 0 <= r["same_answer_vs_1"] <= 1 and r["length_ratio_vs_1"] > 0
        assert rows[0]["same_answer_vs_1"] == 1.0 and rows[0]["speedup_vs_1"] == 1.0
    assert report["series"]["normal"][0]["peak_in_flight"] == 1
    assert [c["concurrency"] for c in report["auto_vs_best"]] == [1, 2]
    assert all(c["auto_tasks_per_min"] == r["tasks_per_min"] for c, r in zip(report["auto_vs_best"], report["series"]["auto"]))
    assert (out / "load.png").exists()
    assert "t/min" in proc.stdout and "…" not in proc.stdout


def test_console_table_fits_80_columns_with_whole_numbers() -> None:
    from rich.console import Console

    from vivace_bench.commands.bench_load import print_table

    row = {"concurrency": 32, "tasks_per_min": 682.41, "speedup_vs_1": 3.21, "p50_s": 12.34, "p95_s": 123.45,
           "peak_in_flight": 32, "kv_usage_peak": 0.123, "length_ratio_vs_1": 1.02, "same_answer_vs_1": 0.875,
           "sot_runs": 16, "mean_points": 3.25}
    report = {"series": {name: [row] for name in ("normal", "sot", "auto")},
              "auto_vs_best": [{"concurrency": 32, "throughput_ratio": 0.99, "throughput_ok": False, "p50_ratio": 1.01, "p50_ok": False}]}
    console = Console(width=80, record=True)
    print_table(report, console, "load: 32 tasks per level, vllm:SmolLM2-135M-Instruct, in-flight cap 32")
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    for cell in ("682.4", "3.21", "123.45", "12%", "1.02", "88%", "16 (3.2)", "0.99x the best tasks/min (below)"):
        assert cell in text
