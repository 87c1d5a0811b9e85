"""``bench pipeline``: multi-agent workloads, a plain-LangGraph baseline against vivace's decisions.

Why side by side in one process: the same engine, the same agents, prompts
and token budgets, greedy decoding; only the decisions change from one
configuration to the next, and the configurations alternate within each
level, so drift in the machine's load hits all of them alike.

- ``langgraph`` (the baseline): the pipeline as a ``StateGraph`` in
  supersteps, ``Send`` for the fan-out, one model, no SoT, first come first
  served.
- ``dataflow``, ``scheduling``, ``sot``: one decision each (an ablation).
- ``vivace``: every decision on.

Quality sits beside every ratio: where decoding is unchanged (dataflow,
scheduling) the share of answers identical to the baseline's, and a
word-level similarity (vLLM on CPU is not batch-invariant, so a different
batch can change a token); where SoT changes the text, the length ratio and
the content coverage against the baseline's answer.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any, Callable

from vivace.eval.stats import median

if TYPE_CHECKING:  # the workloads import the agents (LangGraph): `vivace --help` must not
    from vivace.eval.pipeline_workloads import Workload

WORKLOADS = ("research", "mapreduce", "revise")

CONFIGS: dict[str, dict[str, Any]] = {
    "langgraph": {"execution": "supersteps", "scheduling": "fcfs", "long_form": "off"},
    "dataflow": {"execution": "dataflow", "scheduling": "fcfs", "long_form": "off"},
    "scheduling": {"execution": "supersteps", "scheduling": "program", "long_form": "off"},
    "sot": {"execution": "supersteps", "scheduling": "fcfs", "long_form": "auto"},
    "vivace": {"execution": "dataflow", "scheduling": "program", "long_form": "auto"},
}
BASELINE = "langgraph"
TARGET_C1 = 2.0  # median latency vs the baseline at concurrency 1
TARGET_LOAD_P95 = 1.5  # p95 task latency vs first come first served under load


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run_task(runtime: Any, work: Workload, task: str, config: str, opts: dict[str, Any],
                   index: int = 0) -> dict[str, Any]:
    from vivace.agents.driver import run

    settings = CONFIGS[config]
    options = {"execution": settings["execution"], "long_form": settings["long_form"], **opts}
    trace = await run(work.pipeline, task, runtime, options=options, compression="off")
    return {
        "workload": work.name, "task": task, "config": config, "index": index,
        "latency_s": round(trace.latency_s, 4),
        "critical_path_s": trace.meta.get("critical_path_s"),
        "calls": len(trace.calls),
        "output_tokens": trace.output_tokens,
        "answer": trace.answer,
        "by_agent": breakdown(trace, lambda c: c.agent or "-"),
        "by_model": breakdown(trace, lambda c: c.model or "default"),
        "long_form": [s["extra"]["long_form"] for s in trace.meta.get("steps") or []
                      if (s.get("extra") or {}).get("long_form")],
    }


def breakdown(trace: Any, key: Callable[[Any], str]) -> dict[str, dict[str, float]]:
    """Calls, tokens, call seconds and queue seconds per agent (or model): where the time went."""
    out: dict[str, dict[str, float]] = {}
    for c in trace.calls:
        row = out.setdefault(key(c), {"calls": 0, "prompt_tokens": 0, "output_tokens": 0, "call_s": 0.0,
                                      "queue_s": 0.0})
        row["calls"] += 1
        row["prompt_tokens"] += c.prompt_tokens
        row["output_tokens"] += c.output_tokens
        row["call_s"] = round(row["call_s"] + c.e2e_s, 4)
        row["queue_s"] = round(row["queue_s"] + c.queue_s, 4)
    return out


async def run_level(runtime: Any, items: list[tuple[Workload, str]], config: str, concurrency: int,
                    opts: dict[str, Any]) -> dict[str, Any]:
    """``items`` under ``config``, at most ``concurrency`` at a time, all submitted at once.

    Under load the items are cycled to twice the concurrency, so the level
    holds that many tasks in flight for most of its length.
    """
    runtime.call.defaults.scheduling = CONFIGS[config]["scheduling"]
    gate = asyncio.Semaphore(concurrency)
    count = len(items) if concurrency == 1 else max(len(items), 2 * concurrency)
    batch = [items[i % len(items)] for i in range(count)]

    async def one(i: int, work: Workload, task: str) -> dict[str, Any]:
        async with gate:
            return await run_task(runtime, work, task, config, opts, i)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i, w, t) for i, (w, t) in enumerate(batch)))
    return summarize(config, concurrency, list(results), time.perf_counter() - t0)


async def run_alone(runtime: Any, items: list[tuple["Workload", str]], configs: list[str], opts: dict[str, Any],
                    progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Concurrency 1: task by task, every configuration back to back (the first one rotating), so a swing in
    the machine's load hits a task's configurations alike and the per-task ratios stay fair."""
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    walls = dict.fromkeys(configs, 0.0)
    for i, (work, task) in enumerate(items):
        for config in configs[i % len(configs):] + configs[:i % len(configs)]:
            runtime.call.defaults.scheduling = CONFIGS[config]["scheduling"]
            t0 = time.perf_counter()
            results[config].append(await run_task(runtime, work, task, config, opts, i))
            walls[config] += time.perf_counter() - t0
    rows = {c: summarize(c, 1, results[c], walls[c]) for c in configs}
    for row in rows.values():
        if progress:
            progress(row)
    return rows


def summarize(config: str, concurrency: int, results: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    latencies = [r["latency_s"] for r in results]
    return {"config": config, "concurrency": concurrency, "tasks": len(results), "wall_s": round(wall, 3),
            "tasks_per_min": round(60 * len(results) / wall, 3) if wall > 0 else 0.0,
            "p50_s": median(latencies), "p95_s": percentile(latencies, 0.95),
            "critical_path_p50_s": median([r["critical_path_s"] or 0.0 for r in results]),
            "results": results}


def compare(row: dict[str, Any], base: dict[str, Any], coverage_model: Any = None) -> None:
    """Speed and quality of ``row`` against the baseline's row of the same level, task by task."""
    from vivace.eval.coverage import mutual
    from vivace.eval.fleet_bench import similarity

    mine = {r["index"]: r for r in row["results"]}
    pairs = [(mine[b["index"]], b) for b in base["results"] if b["index"] in mine]
    ratios = [b["latency_s"] / r["latency_s"] for r, b in pairs if r["latency_s"] > 0]
    row["speedup_median"] = round(median(ratios), 3) if ratios else None
    row["p95_ratio"] = round(base["p95_s"] / row["p95_s"], 3) if row["p95_s"] else None
    row["throughput_ratio"] = round(row["tasks_per_min"] / base["tasks_per_min"], 3) if base["tasks_per_min"] else None
    row["identical"] = round(sum(r["answer"] == b["answer"] for r, b in pairs) / len(pairs), 3) if pairs else None
    row["similarity"] = median([similarity(r["answer"], b["answer"]) for r, b in pairs])
    lengths = [len(r["answer"].split()) / len(b["answer"].split()) for r, b in pairs if b["answer"].split()]
    row["length_ratio"] = round(median(lengths), 3) if lengths else None
    if CONFIGS[row["config"]]["long_form"] != "off" and pairs:
        cov = [mutual(b["answer"], r["answer"], coverage_model)["normal_in_sot"] for r, b in pairs]
        row["coverage"] = median([c for c in cov if c is not None])
    else:
        row["coverage"] = None
    for workload in sorted({r["workload"] for r, _ in pairs}):
        wl = [b["latency_s"] / r["latency_s"] for r, b in pairs if r["workload"] == workload and r["latency_s"] > 0]
        row.setdefault("speedup_by_workload", {})[workload] = round(median(wl), 3) if wl else None


def totals(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    """The per-agent (or per-model) breakdown summed over a level's tasks."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        for name, figures in r[key].items():
            acc = out.setdefault(name, dict.fromkeys(figures, 0))
            for k, v in figures.items():
                acc[k] = round(acc[k] + v, 4)
    return out


async def run_bench(runtime: Any, configs: list[str], levels: list[int], chosen: list[str], limit: int | None,
                    opts: dict[str, Any], progress: Callable[[dict[str, Any]], None] | None = None,
                    coverage_model: Any = None) -> dict[str, Any]:
    from vivace.eval.pipeline_workloads import workloads

    if BASELINE not in configs:
        configs = [BASELINE, *configs]
    works = [w for w in workloads() if w.name in chosen]
    items = [(w, t) for w in works for t in (w.tasks[:limit] if limit else w.tasks)]
    warm = items[0]
    await run_task(runtime, warm[0], warm[1], BASELINE, {**opts, "max_tokens": 16})  # imports, first compile
    load_start = os.getloadavg()
    levels_out: list[dict[str, Any]] = []
    for n, level in enumerate(levels):
        order = configs[n % len(configs):] + configs[:n % len(configs)]  # who goes first rotates per level
        rows = {}
        if level == 1:
            rows = await run_alone(runtime, items, configs, opts, progress)
        for config in order if level > 1 else ():
            rows[config] = await run_level(runtime, items, config, level, opts)
            if progress:
                progress(rows[config])
        base = rows[BASELINE]
        for config, row in rows.items():
            compare(row, base, coverage_model)
            row["by_agent"] = totals(row["results"], "by_agent")
            row["by_model"] = totals(row["results"], "by_model")
        levels_out.append({"concurrency": level, "rows": [rows[c] for c in configs]})
    return {"bench": "pipeline", "configs": {c: CONFIGS[c] for c in configs}, "workloads": chosen,
            "tasks": [{"workload": w.name, "task": t} for w, t in items], "levels": levels_out,
            "targets": targets(levels_out), "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()]}


def targets(levels: list[dict[str, Any]]) -> dict[str, bool | None]:
    """The issue's targets, read off the rows (None when the level or row was not run)."""
    def row(level: int | None, config: str) -> dict[str, Any] | None:
        for lv in levels:
            if (level is None and lv["concurrency"] > 1) or lv["concurrency"] == level:
                return next((r for r in lv["rows"] if r["config"] == config), None)
        return None

    c1 = row(1, "vivace")
    load = row(None, "vivace")
    load_sched = row(None, "scheduling")
    return {
        f"c1_median_speedup>={TARGET_C1:g}x": None if not c1 or c1["speedup_median"] is None
        else c1["speedup_median"] >= TARGET_C1,
        f"load_p95>={TARGET_LOAD_P95:g}x_fcfs_at_equal_throughput": None if not load_sched or not load_sched["p95_ratio"]
        else load_sched["p95_ratio"] >= TARGET_LOAD_P95 and (load_sched["throughput_ratio"] or 0) >= 1.0,
        "vivace_load_p95_ratio": load["p95_ratio"] if load else None,  # type: ignore[dict-item]
    }


def plot(report: dict[str, Any], out_dir: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["levels"]
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 4), squeeze=False)
    for ax, level in zip(axes[0], levels):
        names = [r["config"] for r in level["rows"]]
        ax.bar(names, [r["p50_s"] or 0 for r in level["rows"]], label="median")
        ax.scatter(names, [r["p95_s"] or 0 for r in level["rows"]], color="black", marker="_", s=400, label="p95")
        ax.set_title(f"concurrency {level['concurrency']}")
        ax.set_ylabel("task latency, s")
        ax.tick_params(axis="x", rotation=30)
        ax.legend()
    fig.tight_layout()
    path = out_dir / "pipeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
