"""`vivace bench pipeline`: orchestration and figures on the FakeBackend, one small run on the real engine."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import VIVACE, cli_env
from vivace.agents.sot.length_plan import LengthHistory
from vivace.assembly import runtime_for
from vivace.config import Config
from vivace.errors import InputError
from vivace_bench.pipeline_bench import CONFIGS, arrival_times, compare, level_name, run_bench
from vivace_bench.pipeline_workloads import docs_folder, workloads
from vivace.runtime.fake import FakeBackend


def responder(request) -> str:  # type: ignore[no-untyped-def]
    tag = request.tag
    if tag.endswith("/skeleton"):
        return " Cost\n2. Speed\n3. Comfort"
    if "/plan" in tag:
        return json.dumps({"aspects": ["First part", "Second part"]})
    if "/review" in tag:
        return json.dumps({"verdict": "approve", "fix": ""})
    return "Some words " * (3 + len(request.messages[-1]["content"]) % 7)


def test_the_bundled_workloads_validate_and_read_their_documents() -> None:
    works = {w.name: w for w in workloads()}
    assert set(works) == {"research", "mapreduce", "revise"}
    for w in works.values():
        w.pipeline.validate()
        assert w.tasks
    docs = sorted(p.name for p in docs_folder().iterdir())
    assert len(docs) == 5 and all(d.endswith(".md") for d in docs)
    sizes = [len((docs_folder() / d).read_text().split()) for d in docs]
    assert max(sizes) >= 3 * min(sizes)  # uneven on purpose: supersteps make every chain wait for the longest


def test_every_configuration_is_compared_with_the_baseline_task_by_task(tmp_path: Path) -> None:
    runtime = runtime_for(Config(backend="fake", max_tokens=32), FakeBackend(responder, per_token_s=0.002),
                          save_runs=False)
    (tmp_path / "length-history-agent-writer.jsonl").write_text('{"question": "stale", "tokens": 999}\n')
    report = asyncio.run(run_bench(runtime, ["dataflow", "vivace"], [1, 2], ["research", "mapreduce", "revise"], 1,
                                   {"max_tokens": 32}, history_dir=tmp_path))
    # the plans learned from this run's own answers only: an earlier run's history in the folder is gone
    assert report["length_history"] == str(tmp_path)
    writer = LengthHistory(tmp_path, "length-history").of("agent-writer").rows()
    assert writer and "stale" not in dict(writer)
    assert [lv["concurrency"] for lv in report["levels"]] == [1, 2]
    for level in report["levels"]:
        rows = {r["config"]: r for r in level["rows"]}
        assert list(rows) == ["langgraph", "dataflow", "vivace"]
        base = rows["langgraph"]
        assert base["speedup_median"] == 1.0 and base["identical"] == 1.0 and base["coverage"] is None
        assert rows["dataflow"]["identical"] == 1.0  # the fake decodes the same text whatever the order
        assert rows["vivace"]["coverage"] is not None  # SoT may change the text: coverage stands beside it
        for r in rows.values():
            assert r["tasks"] == (3 if level["concurrency"] == 1 else 4)  # under load: cycled to twice the level
            assert 0 < r["p50_s"] <= r["p95_s"] and r["tasks_per_min"] > 0
            assert {"planner", "researcher", "writer", "critic", "summarizer", "extractor"} <= set(r["by_agent"])
            assert sum(a["calls"] for a in r["by_agent"].values()) == sum(x["calls"] for x in r["results"])
            # Each task's critical path is split among the agents on it, and sums to the path itself.
            for x in r["results"]:
                on_path = sum(a["critical_s"] for a in x["by_agent"].values())
                assert on_path == pytest.approx(x["critical_path_s"], abs=1e-3) and on_path > 0
            assert r["by_agent"]["writer"]["critical_s"] > 0 and r["by_agent"]["documents"]["calls"] == 0
    vivace_c1 = next(r for r in report["levels"][0]["rows"] if r["config"] == "vivace")
    modes = [d["mode"] for x in vivace_c1["results"] for d in x["long_form"]]
    assert modes and set(modes) <= {"sot", "normal"}  # the writer's decision, per call, in every result
    assert set(report["targets"]) and report["configs"]["langgraph"] == {**CONFIGS["langgraph"], "step_model": None}


def test_open_arrivals_are_seeded_poisson_and_the_same_for_every_configuration() -> None:
    at = arrival_times(30.0, 400, seed=3)
    assert at == arrival_times(30.0, 400, seed=3) and at != arrival_times(30.0, 400, seed=4)
    assert all(b > a for a, b in zip(at, at[1:]))
    assert 1.7 < at[-1] / len(at) < 2.3  # 30 a minute: one every 2 s on average
    runtime = runtime_for(Config(backend="fake", max_tokens=32), FakeBackend(responder, per_token_s=0.002),
                          save_runs=False)
    report = asyncio.run(run_bench(runtime, ["scheduling"], [], ["research", "revise"], 1, {"max_tokens": 32},
                                   rates=[600.0], arrivals=5, repeats=2))
    (level,) = report["levels"]
    assert level["concurrency"] is None and level["arrival_rate"] == 600.0 and level_name(level) == "600/min arriving"
    rows = {r["config"]: r for r in level["rows"]}
    assert set(rows) == {"langgraph", "scheduling"}
    first, second = arrival_times(600.0, 5, seed=0), arrival_times(600.0, 5, seed=1000)
    assert first != second  # each repeat has arrivals of its own
    for r in rows.values():
        assert r["tasks"] == 10 and [x["arrival_s"] for x in r["results"]] == first + second  # pooled
        assert sorted(x["index"] for x in r["results"]) == list(range(10)) and len(r["repeats"]) == 2
        for rep, at in zip(r["repeats"], (first, second)):
            assert rep["wall_s"] >= at[-1] and rep["p95_ratio"] > 0  # the last task started only when it arrived
        assert r["wall_s"] == pytest.approx(sum(rep["wall_s"] for rep in r["repeats"]), abs=0.01)
        assert all(0 < x["latency_s"] < max(rep["wall_s"] for rep in r["repeats"]) for x in r["results"])
    assert rows["langgraph"]["speedup_median"] == 1.0 and rows["scheduling"]["speedup_median"] > 0
    assert any("600/min arriving: scheduling p95" in k for k in report["targets"])


def test_compare_reads_speed_and_quality_off_matching_tasks() -> None:
    def result(task: str, latency: float, answer: str) -> dict:
        return {"workload": "w", "task": task, "latency_s": latency, "answer": answer, "index": ord(task)}

    base = {"config": "langgraph", "p95_s": 4.0, "tasks_per_min": 10.0,
            "results": [result("a", 4.0, "one two three four"), result("b", 2.0, "x y")]}
    row = {"config": "dataflow", "p95_s": 2.0, "tasks_per_min": 20.0,
           "results": [result("b", 1.0, "x y"), result("a", 1.0, "one two")]}
    compare(row, base)
    assert row["speedup_median"] == 3.0 and row["p95_ratio"] == 2.0 and row["throughput_ratio"] == 2.0
    assert row["identical"] == 0.5 and row["length_ratio"] == 0.75 and row["coverage"] is None


def test_bad_levels_are_one_line(tmp_path: Path, vivace_home: Path) -> None:
    proc = subprocess.run([VIVACE, "bench", "pipeline", "--concurrency", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=cli_env(vivace_home), timeout=120)
    assert proc.returncode == 2 and "at least 1" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([VIVACE, "bench", "pipeline", "--rate", "0", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=cli_env(vivace_home), timeout=120)
    assert proc.returncode == 2 and "--rate" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.engine
def test_small_real_run_writes_a_consistent_report(tmp_path: Path, vivace_home: Path, model_dir: Path) -> None:
    """Two real engines: the default, and the same weights in float32 as the step model of ``models``."""
    out = tmp_path / "pipeline"
    (tmp_path / "vivace.toml").write_text('[models.fp32]\ndtype = "float32"   # the same weights, another dtype\n')
    proc = subprocess.run(
        [VIVACE, "bench", "pipeline", "--workloads", "mapreduce", "--limit", "1", "--concurrency", "1", "2",
         "--configs", "dataflow", "models", "--step-model", "fp32", "--max-tokens", "12", "--out", str(out)],
        capture_output=True, text=True, env=cli_env(vivace_home), timeout=900, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["bench"] == "pipeline" and report["backend"].startswith("vllm")
    assert report["machine"]["cpu"] and report["config"]["step_model"] == "fp32"
    served = {m["name"]: m for m in report["models"]}
    assert set(served) == {"default", "fp32"} and served["fp32"]["dtype"] == "float32"
    assert served["fp32"]["weights"] == served["default"]["weights"]  # the same weights, served twice
    assert "fp32 is a second vLLM engine on the same" in " ".join(proc.stderr.split())  # both share the cores
    for level in report["levels"]:
        rows = {r["config"]: r for r in level["rows"]}
        assert set(rows) == {"langgraph", "dataflow", "models"}
        for r in rows.values():
            assert len(r["results"]) == (1 if level["concurrency"] == 1 else 4)  # under load: cycled to 2x the level
            for result in r["results"]:
                assert result["calls"] == 11 and result["answer"].strip()  # 5 summaries, 5 fact lists, 1 combine
            assert r["by_agent"]["summarizer"]["calls"] == 5 * len(r["results"]) and r["by_model"]
            assert 0 <= r["identical"] <= 1 and 0 < r["similarity"] <= 1
        n = len(rows["models"]["results"])
        assert {k: v["calls"] for k, v in rows["models"]["by_model"].items()} == {"fp32": 10 * n, "default": n}
        assert set(rows["dataflow"]["by_model"]) == {"default"}
    assert (out / "pipeline.png").exists()
    assert "×med" in proc.stdout


def test_the_models_configuration_puts_every_step_but_the_writers_on_the_step_model() -> None:
    config = Config(backend="fake", max_tokens=32, models={"small": {"backend": "fake"}})
    main, small = FakeBackend(responder, model="main"), FakeBackend(responder, model="tiny")
    runtime = runtime_for(config, main, models={"small": small}, save_runs=False)
    report = asyncio.run(run_bench(runtime, ["models", "vivace"], [1], ["research", "revise"], 1,
                                   {"max_tokens": 32, "step_model": "small"}))
    assert report["configs"]["models"]["step_model"] == "small" and report["configs"]["langgraph"]["step_model"] is None
    rows = {r["config"]: r for r in report["levels"][0]["rows"]}
    for name in ("models", "vivace"):
        by_agent, by_model = rows[name]["by_agent"], rows[name]["by_model"]
        writers = sum(by_agent[a]["calls"] for a in ("writer", "answer") if a in by_agent)
        assert writers > 0 and by_model["default"]["calls"] == writers  # the long-form answers stay on the default
        short = sum(a["calls"] for n, a in by_agent.items() if n not in ("writer", "answer"))
        assert short > 0 and by_model["small"]["calls"] == short  # planner, researchers, critic on the step model
        assert rows[name]["similarity"] is not None
    assert set(rows["langgraph"]["by_model"]) == {"default"}  # the baseline: one model
    with pytest.raises(InputError, match="--step-model"):
        asyncio.run(run_bench(runtime, ["models"], [1], ["revise"], 1, {"max_tokens": 32}))


def test_the_report_section_splits_calls_per_model_and_names_the_models_served() -> None:
    from vivace_bench.report_sections import pipeline

    row = {"config": "models", "p50_s": 7.1, "by_agent": {"writer": {"calls": 1, "critical_s": 2.0}},
           "by_model": {"int8": {"calls": 39, "output_tokens": 900, "call_s": 72.26, "queue_s": 0.0},
                        "default": {"calls": 8, "output_tokens": 1200, "call_s": 33.2, "queue_s": 0.1}}}
    data = {"workloads": ["research"], "levels": [{"concurrency": 1, "rows": [row]}],
            "models": [{"name": "default", "backend": "vllm", "weights": "W", "dtype": "bfloat16", "compiled": False},
                       {"name": "int8", "backend": "vllm", "weights": "W-w8a8-sq", "dtype": "bfloat16",
                        "quantization": "compressed-tensors", "compiled": True}]}
    tables = {t.title: t for t in pipeline(data)}
    per_model = tables["per model (summed over the level's tasks)"]
    assert ["C=1", "models", "int8", "39", "900", "72.3", "0.0"] in per_model.rows
    assert tables["models served"].rows[1] == ["int8", "vllm", "W-w8a8-sq", "bfloat16", "compressed-tensors", "yes"]
    older = {"workloads": ["research"], "levels": [{"concurrency": 1, "rows": [{"config": "langgraph"}]}]}
    assert not {"per model (summed over the level's tasks)", "models served"} & {t.title for t in pipeline(older)}
