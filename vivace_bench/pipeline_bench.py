"""``bench pipeline``: multi-agent workloads, a plain-LangGraph baseline against vivace's decisions.

Why side by side in one process: the same engine, the same agents, prompts
and token budgets, greedy decoding; only the decisions change from one
configuration to the next, and the configurations alternate within each
level, so drift in the machine's load hits all of them alike.

- ``langgraph`` (the baseline): the pipeline as a ``StateGraph`` in
  supersteps, ``Send`` for the fan-out, one model, no SoT, first come first
  served.
- ``dataflow``, ``scheduling`` (the ``program`` policy, or the one chosen),
  ``age`` (oldest run first), ``sot``, ``models`` (every step but the
  writers on a second model, ``opts["step_model"]``): one decision each (an
  ablation).
- ``vivace``: every decision on (the step model only when one is given).

Quality sits beside every ratio: where decoding is unchanged (dataflow,
scheduling) the share of answers identical to the baseline's, and a
word-level similarity (vLLM on CPU is not batch-invariant, so a different
batch can change a token); where SoT changes the text, the length ratio and
the content coverage against the baseline's answer.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, cast

from vivace.errors import InputError
from vivace_bench.stats import median, percentile

if TYPE_CHECKING:  # the workloads import the agents (LangGraph): `vivace --help` must not
    from vivace_bench.pipeline_workloads import Workload

WORKLOADS = ("research", "mapreduce", "revise")

_ONE = {"execution": "supersteps", "scheduling": "fcfs", "long_form": "off", "step_model": False}
CONFIGS: dict[str, dict[str, Any]] = {
    "langgraph": _ONE,
    "dataflow": {**_ONE, "execution": "dataflow"},
    "scheduling": {**_ONE, "scheduling": "program"},
    "age": {**_ONE, "scheduling": "age"},
    "sot": {**_ONE, "long_form": "auto"},
    "models": {**_ONE, "step_model": True},  # every step but the writers on the bench's --step-model
    "vivace": {"execution": "dataflow", "scheduling": "program", "long_form": "auto", "step_model": True},
}
BASELINE = "langgraph"
TARGET_C1 = 2.0  # median latency vs the baseline at concurrency 1
TARGET_LOAD_P95 = 1.5  # p95 task latency vs first come first served under load


def check_step_model(configs: list[str], step_model: str | None) -> None:
    """``models`` runs only with a step model: one ``InputError`` for the command (before any engine) and the library."""
    if "models" in configs and not step_model:
        raise InputError("--configs models needs --step-model NAME: the second model (a [models.NAME] of the "
                         "config) that every step but the writers runs on")


async def run_task(runtime: Any, work: Workload, task: str, config: str, opts: dict[str, Any],
                   index: int = 0) -> dict[str, Any]:
    from vivace.agents.driver import run

    settings = CONFIGS[config]
    opts = dict(opts)
    named = opts.pop("step_model", None)  # the bench's --step-model: only the configurations with the decision use it
    step_model = named if settings["step_model"] else None
    options = {"execution": settings["execution"], "long_form": settings["long_form"], **opts}
    trace = await run(work.on_step_model(step_model), task, runtime, options=options, compression="off")
    return {
        "workload": work.name, "task": task, "config": config, "index": index,
        "latency_s": round(trace.latency_s, 4),
        "critical_path_s": trace.critical_path_s,
        "calls": len(trace.calls),
        "output_tokens": trace.output_tokens,
        "answer": trace.answer,
        "by_agent": breakdown(trace, lambda c: c.agent or "-", critical=critical_by_agent(trace)),
        "by_model": breakdown(trace, lambda c: c.model or "default"),
        "long_form": [s["extra"]["long_form"] for s in trace.steps
                      if (s.get("extra") or {}).get("long_form")],
    }


def breakdown(trace: Any, key: Callable[[Any], str],
              critical: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """Calls, tokens, call seconds and queue seconds per agent (or model): where the time went.

    With ``critical`` (per agent), each row also has ``critical_s``: its seconds on the critical path.
    """
    zero = {"calls": 0, "prompt_tokens": 0, "output_tokens": 0, "call_s": 0.0, "queue_s": 0.0,
            **({"critical_s": 0.0} if critical is not None else {})}
    out: dict[str, dict[str, float]] = {}
    for c in trace.calls:
        row = out.setdefault(key(c), dict(zero))
        row["calls"] += 1
        row["prompt_tokens"] += c.prompt_tokens
        row["output_tokens"] += c.output_tokens
        row["call_s"] = round(row["call_s"] + c.e2e_s, 4)
        row["queue_s"] = round(row["queue_s"] + c.queue_s, 4)
    for name, seconds in (critical or {}).items():
        out.setdefault(name, dict(zero))["critical_s"] = seconds
    return out


def critical_by_agent(trace: Any) -> dict[str, float]:
    """Seconds each agent spent on the run's critical path: which agent the latency waits on."""
    from vivace.agents.driver import critical_steps

    out: dict[str, float] = {}
    for s in critical_steps(trace):
        out[s["agent"]] = round(out.get(s["agent"], 0.0) + s["seconds"], 4)
    return out


async def run_level(runtime: Any, items: list[tuple[Workload, str]], config: str, concurrency: int,
                    opts: dict[str, Any], scheduling: str = "program") -> dict[str, Any]:
    """``items`` under ``config``, at most ``concurrency`` at a time, all submitted at once.

    Under load the items are cycled to twice the concurrency, so the level
    holds that many tasks in flight for most of its length.
    """
    set_policy(runtime, config, scheduling)
    gate = asyncio.Semaphore(concurrency)
    count = len(items) if concurrency == 1 else max(len(items), 2 * concurrency)
    batch = [items[i % len(items)] for i in range(count)]

    async def one(i: int, work: Workload, task: str) -> dict[str, Any]:
        async with gate:
            return await run_task(runtime, work, task, config, opts, i)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i, w, t) for i, (w, t) in enumerate(batch)))
    return summarize(config, concurrency, list(results), time.perf_counter() - t0)


def policy_of(config: str, scheduling: str) -> str:
    """The configuration's ordering: its own, with ``program`` standing for the policy the user chose."""
    own = CONFIGS[config]["scheduling"]
    return scheduling if own == "program" else own


def set_policy(runtime: Any, config: str, scheduling: str) -> None:
    runtime.call.defaults.scheduling = policy_of(config, scheduling)


def arrival_times(rate_per_min: float, count: int, seed: int = 0) -> list[float]:
    """Seconds from the start at which ``count`` tasks arrive, a Poisson process of ``rate_per_min``.

    Seeded, so every configuration of a level sees the same arrivals.
    """
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(count):
        t += rng.expovariate(rate_per_min / 60.0)
        out.append(round(t, 4))
    return out


async def run_open(runtime: Any, items: list[tuple["Workload", str]], config: str, rate_per_min: float, count: int,
                   opts: dict[str, Any], seed: int = 0, scheduling: str = "program") -> dict[str, Any]:
    """``count`` tasks under ``config``, each started when it arrives (open arrivals, no cap on tasks in flight).

    Why: with a fixed number of tasks in flight (``run_level``) the mean
    latency is that number over the throughput whatever the order, so only
    arrivals that keep coming whether or not earlier tasks finished show what
    an ordering buys; a task's latency runs from its arrival.
    """
    set_policy(runtime, config, scheduling)
    at = arrival_times(rate_per_min, count, seed)
    batch = [items[i % len(items)] for i in range(count)]
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def one(i: int, work: Workload, task: str) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, t0 + at[i] - loop.time()))
        return {**await run_task(runtime, work, task, config, opts, i), "arrival_s": at[i]}

    results = await asyncio.gather(*(one(i, w, t) for i, (w, t) in enumerate(batch)))
    row = summarize(config, None, list(results), loop.time() - t0)
    row["arrival_rate"] = rate_per_min
    return row


async def run_open_repeats(runtime: Any, items: list[tuple["Workload", str]], order: list[str], rate: float,
                           count: int, opts: dict[str, Any], seed: int, scheduling: str, repeats: int,
                           progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """One open-arrival level ``repeats`` times, each with its own arrivals and the configurations' order rotated;
    every configuration's tasks are pooled, so its p95 is read off ``repeats * count`` tasks.

    Why: one level of a couple of dozen tasks moves by a third between two
    configurations that decode alike (batches change tokens, a critic's verdict
    flips, a revision round is added); the pool, and each repeat's own figures
    beside it, show how much of a ratio is the machine's noise.
    """
    pooled: dict[str, list[dict[str, Any]]] = {c: [] for c in order}
    walls = dict.fromkeys(order, 0.0)
    each: dict[str, list[dict[str, Any]]] = {c: [] for c in order}
    for r in range(repeats):
        for config in order[r % len(order):] + order[:r % len(order)]:
            row = await run_open(runtime, items, config, rate, count, opts, seed + 1000 * r, scheduling)
            for result in row["results"]:
                result.update(index=result["index"] + r * count, repeat=r)
            pooled[config] += row["results"]
            walls[config] += row["wall_s"]
            each[config].append({k: row[k] for k in ("p50_s", "p95_s", "tasks_per_min", "wall_s")})
            if progress:
                progress({**row, "repeat": r})
    rows = {}
    for config in order:
        rows[config] = summarize(config, None, pooled[config], walls[config])
        rows[config].update(arrival_rate=rate, repeats=each[config])
    for config in order:  # each repeat's own p95 ratio: the spread the pooled one hides
        for mine, base in zip(rows[config]["repeats"], rows[BASELINE]["repeats"]):
            mine["p95_ratio"] = round(base["p95_s"] / mine["p95_s"], 3) if mine["p95_s"] else None
    return rows


async def run_alone(runtime: Any, items: list[tuple["Workload", str]], configs: list[str], opts: dict[str, Any],
                    progress: Callable[[dict[str, Any]], None] | None = None,
                    scheduling: str = "program") -> dict[str, dict[str, Any]]:
    """Concurrency 1: task by task, every configuration back to back (the first one rotating), so a swing in
    the machine's load hits a task's configurations alike and the per-task ratios stay fair."""
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    walls = dict.fromkeys(configs, 0.0)
    for i, (work, task) in enumerate(items):
        for config in configs[i % len(configs):] + configs[:i % len(configs)]:
            set_policy(runtime, config, scheduling)
            t0 = time.perf_counter()
            results[config].append(await run_task(runtime, work, task, config, opts, i))
            walls[config] += time.perf_counter() - t0
    rows = {c: summarize(c, 1, results[c], walls[c]) for c in configs}
    for row in rows.values():
        if progress:
            progress(row)
    return rows


def summarize(config: str, concurrency: int | None, results: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    latencies = [r["latency_s"] for r in results]
    return {"config": config, "concurrency": concurrency, "tasks": len(results), "wall_s": round(wall, 3),
            "tasks_per_min": round(60 * len(results) / wall, 3) if wall > 0 else 0.0,
            "p50_s": median(latencies), "p95_s": percentile(latencies, 0.95),
            "critical_path_p50_s": median([r["critical_path_s"] or 0.0 for r in results]),
            "results": results}


def compare(row: dict[str, Any], base: dict[str, Any], coverage_model: Any = None) -> None:
    """Speed and quality of ``row`` against the baseline's row of the same level, task by task."""
    from vivace_bench.coverage import mutual
    from vivace_bench.fleet_bench import similarity

    mine = {r["index"]: r for r in row["results"]}
    pairs = [(mine[b["index"]], b) for b in base["results"] if b["index"] in mine]
    ratios = [b["latency_s"] / r["latency_s"] for r, b in pairs if r["latency_s"] > 0]
    row["speedup_median"] = round(cast(float, median(ratios)), 3) if ratios else None
    row["p95_ratio"] = round(base["p95_s"] / row["p95_s"], 3) if row["p95_s"] else None
    row["throughput_ratio"] = round(row["tasks_per_min"] / base["tasks_per_min"], 3) if base["tasks_per_min"] else None
    row["identical"] = round(sum(r["answer"] == b["answer"] for r, b in pairs) / len(pairs), 3) if pairs else None
    row["similarity"] = median([similarity(r["answer"], b["answer"]) for r, b in pairs])
    lengths = [len(r["answer"].split()) / len(b["answer"].split()) for r, b in pairs if b["answer"].split()]
    row["length_ratio"] = round(cast(float, median(lengths)), 3) if lengths else None
    if CONFIGS[row["config"]]["long_form"] != "off" and pairs:
        cov = [mutual(b["answer"], r["answer"], coverage_model)["normal_in_sot"] for r, b in pairs]
        row["coverage"] = median([c for c in cov if c is not None])
    else:
        row["coverage"] = None
    for workload in sorted({r["workload"] for r, _ in pairs}):
        wl = [b["latency_s"] / r["latency_s"] for r, b in pairs if r["workload"] == workload and r["latency_s"] > 0]
        row.setdefault("speedup_by_workload", {})[workload] = round(cast(float, median(wl)), 3) if wl else None


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
                    coverage_model: Any = None, rates: Sequence[float] = (), arrivals: int = 24,
                    scheduling: str = "program", history_dir: Path | None = None, repeats: int = 1) -> dict[str, Any]:
    """Every level: the concurrency ``levels`` (1 = alone, N = N tasks at a time), then one open-arrival level per
    ``rates`` entry (tasks per minute, ``arrivals`` tasks each). ``scheduling`` is the policy of the configurations
    that schedule (``vivace.runtime.priority``); the run's length history goes to ``history_dir``. Each open-arrival
    level runs ``repeats`` times with other arrivals (``run_open_repeats``)."""
    from vivace.agents.sot.length_plan import LengthHistory, own_history
    from vivace_bench.pipeline_workloads import workloads

    if BASELINE not in configs:
        configs = [BASELINE, *configs]
    step_model = opts.get("step_model")
    check_step_model(configs, step_model)
    works = [w for w in workloads() if w.name in chosen]
    items = [(w, t) for w in works for t in (w.tasks[:limit] if limit else w.tasks)]
    warm = items[0]
    await run_task(runtime, warm[0], warm[1], BASELINE, {**opts, "max_tokens": 16})  # imports, first compile
    if step_model:  # the second model's first calls too, outside every configuration's clock
        await run_task(runtime, warm[0], warm[1], "models", {**opts, "max_tokens": 16})
    # The length plans learn from this run's own normal answers, from none at the start, as on a fresh install:
    # a writer's SoT expansion is sized by the writer's earlier answers to other tasks, whatever the config.
    folder = history_dir or Path(tempfile.mkdtemp(prefix="vivace-lengths-"))
    for stale in folder.glob("length-history*.jsonl"):  # an earlier run's, in the same --out
        stale.unlink()
    with own_history(LengthHistory(folder, "length-history")):
        load_start = os.getloadavg()
        levels_out: list[dict[str, Any]] = []
        plan: list[tuple[int, float | None]] = [(c, None) for c in levels] + [(0, r) for r in rates]
        for n, (level, rate) in enumerate(plan):
            order = configs[n % len(configs):] + configs[:n % len(configs)]  # who goes first rotates per level
            rows = {}
            if level == 1:
                rows = await run_alone(runtime, items, configs, opts, progress, scheduling)
            if rate is not None:
                rows = await run_open_repeats(runtime, items, order, rate, arrivals, opts, n, scheduling, repeats, progress)
            for config in order if level > 1 else ():
                rows[config] = await run_level(runtime, items, config, level, opts, scheduling)
                if progress:
                    progress(rows[config])
            base = rows[BASELINE]
            for config, row in rows.items():
                compare(row, base, coverage_model)
                row["by_agent"] = totals(row["results"], "by_agent")
                row["by_model"] = totals(row["results"], "by_model")
            levels_out.append({"concurrency": level or None, "arrival_rate": rate, "rows": [rows[c] for c in configs]})
        return {"bench": "pipeline", "scheduling": scheduling, "length_history": str(folder),
                "configs": {c: {**CONFIGS[c], "scheduling": policy_of(c, scheduling),
                                "step_model": step_model if CONFIGS[c]["step_model"] else None} for c in configs},
                "workloads": chosen,
                "tasks": [{"workload": w.name, "task": t} for w, t in items], "levels": levels_out,
                "targets": targets(levels_out), "load_average_start": [round(x, 2) for x in load_start],
                "load_average_end": [round(x, 2) for x in os.getloadavg()]}


def targets(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, read off the rows (None when the level or row was not run)."""
    def row(level: int, config: str) -> dict[str, Any] | None:
        for lv in levels:
            if lv["concurrency"] == level:
                return next((r for r in lv["rows"] if r["config"] == config), None)
        return None

    c1 = row(1, "vivace")
    out: dict[str, Any] = {
        f"c1_median_speedup>={TARGET_C1:g}x": None if not c1 or c1["speedup_median"] is None
        else c1["speedup_median"] >= TARGET_C1,
    }
    for lv in levels:  # every load level, closed or open: scheduling alone, and vivace's ratio beside it
        if lv["concurrency"] == 1:
            continue
        rows = {r["config"]: r for r in lv["rows"]}
        for name in ("scheduling", "age"):
            sched = rows.get(name)
            out[f"{level_name(lv)}: {name} p95>={TARGET_LOAD_P95:g}x fcfs at equal throughput"] = (
                None if not sched or not sched["p95_ratio"]
                else sched["p95_ratio"] >= TARGET_LOAD_P95 and (sched["throughput_ratio"] or 0) >= 1.0)
        whole = rows.get("vivace")
        out[f"{level_name(lv)}: vivace p95 ratio"] = whole["p95_ratio"] if whole else None
    return out


def level_name(level: dict[str, Any]) -> str:
    """``C=8`` for a closed level, ``12/min`` for open arrivals."""
    rate = level.get("arrival_rate")
    return f"{rate:g}/min arriving" if rate else f"C={level['concurrency']}"


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
        ax.set_title(level_name(level))
        ax.set_ylabel("task latency, s")
        ax.tick_params(axis="x", rotation=30)
        ax.legend()
    fig.tight_layout()
    path = out_dir / "pipeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
