"""`vivace bench load`: many agent tasks at once, through the process-wide in-flight cap.

Three series, normal answers, SoT answers and ``auto`` (the router, with the
load-aware fan-out of ``vivace.agents.sot.load``), each at every concurrency
level, on one engine with one token budget; ``compare_auto`` says per level
whether auto is at least as fast as the better of the other two. Latencies and wall time come from the
runs' traces; peak in-flight requests from the process limiter; KV-cache use
from the engine's stat logger, sampled while a level runs. A quality figure
sits beside every ratio: the mean answer length, against the same series at
C=1 (greedy decoding, so a change means batching changed the answers).
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
from pathlib import Path
from typing import Any, Callable

from vivace.choices import Mode
from vivace_bench.stats import percentile

log = logging.getLogger(__name__)

DEFAULT_LEVELS = (1, 8, 16, 32)
SERIES = (Mode.NORMAL.value, Mode.SOT.value, Mode.AUTO.value)
TARGET_NORMAL_C16_MIN = 5.0


def questions(n: int) -> list[str]:
    """The bundled SoT questions, cycled to ``n``."""
    from vivace_bench.sot_bench import load_questions

    pool = [q["question"] for q in load_questions(None)]
    return [pool[i % len(pool)] for i in range(n)]


class KVSampler:
    """Samples the engine's KV-cache usage while a level runs; absent when the backend has no stats."""

    def __init__(self, backend: Any, every_s: float = 0.1) -> None:
        self.stats: Any = getattr(backend, "stats", None)
        self.every_s = every_s
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append(float(self.stats.kv_cache_usage))
            await asyncio.sleep(self.every_s)

    def __enter__(self) -> "KVSampler":
        if self.stats is not None and hasattr(self.stats, "kv_cache_usage"):
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    @property
    def peak(self) -> float | None:
        return max(self.samples) if self.samples else None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


async def run_level(backend: Any, series: str, tasks: list[str], concurrency: int, opts: dict[str, Any]) -> dict[str, Any]:
    """``len(tasks)`` runs, at most ``concurrency`` at a time; figures from their traces."""
    from vivace.agents import ask

    gate = asyncio.Semaphore(concurrency)
    limiter = getattr(backend, "limiter", None)
    if limiter is not None:
        limiter.reset_peak()

    async def one(question: str) -> Any:
        async with gate:
            return await ask(question, backend, mode=series, **opts)

    with KVSampler(backend) as kv:
        traces = await asyncio.gather(*(one(q) for q in tasks))
    latencies = [t.latency_s for t in traces]
    start = min(t.started_at for t in traces)
    wall = max(t.started_at + t.latency_s for t in traces) - start
    return {
        "series": series,
        "concurrency": concurrency,
        "tasks": len(traces),
        "wall_s": wall,
        "tasks_per_min": 60.0 * len(traces) / wall if wall > 0 else None,
        "p50_s": percentile(latencies, 0.5),
        "p95_s": percentile(latencies, 0.95),
        "output_tok_s": sum(t.output_tokens for t in traces) / wall if wall > 0 else None,
        "mean_output_tokens": statistics.fmean(t.output_tokens for t in traces),
        "llm_calls": sum(len(t.calls) for t in traces),
        "sot_runs": sum(1 for t in traces if t.mode == "sot"),
        "mean_points": statistics.fmean(len(t.points) for t in sot_runs) if (sot_runs := [t for t in traces if t.mode == "sot"]) else None,
        "load_seen": load_seen(traces),
        "load_changed_runs": sum(1 for t in traces if ((t.router or {}).get("load") or {}).get("changed")),
        "failed_runs": sum(1 for t in traces if t.error),
        "peak_in_flight": limiter.peak if limiter is not None else None,
        "in_flight_cap": limiter.max_in_flight if limiter is not None else None,
        "kv_usage_peak": kv.peak,
        "kv_usage_mean": kv.mean,
        "_answers": [t.answer for t in traces],  # compared with C=1 in add_ratios, then dropped
    }


def load_seen(traces: list[Any]) -> dict[str, Any] | None:
    """What auto's decisions saw (median over the level's runs): capacity, the engine's knee, a run's share, free slots."""
    loads = [load for t in traces if (load := (t.router or {}).get("load"))]
    if not loads:
        return None
    out: dict[str, Any] = {}
    for key in ("capacity", "knee", "share", "free", "runs"):
        values = [load[key] for load in loads if load.get(key) is not None]
        out[key] = percentile(values, 0.5)
    return out


def add_ratios(series_rows: list[dict[str, Any]]) -> None:
    """Speedup against C=1, with two quality figures beside it: answer length and identical answers.

    Greedy decoding makes the C=1 answers the reference: batching should not
    change them, so ``same_answer_vs_1`` is the fraction of tasks whose answer
    text equals the same task's answer at C=1.
    """
    base = next((r for r in series_rows if r["concurrency"] == 1), None)
    for row in series_rows:
        if base and base["tasks_per_min"] and row["tasks_per_min"]:
            row["speedup_vs_1"] = row["tasks_per_min"] / base["tasks_per_min"]
            row["length_ratio_vs_1"] = row["mean_output_tokens"] / base["mean_output_tokens"] if base["mean_output_tokens"] else None
        else:
            row["speedup_vs_1"] = row["length_ratio_vs_1"] = None
        ref, answers = (base or {}).get("_answers"), row.get("_answers")
        row["same_answer_vs_1"] = sum(a == b for a, b in zip(ref, answers)) / len(answers) if ref and answers else None
    for row in series_rows:
        row.pop("_answers", None)


MEDIAN_KEYS = ("wall_s", "tasks_per_min", "p50_s", "p95_s", "output_tok_s", "mean_output_tokens", "llm_calls", "sot_runs",
               "mean_points", "load_changed_runs", "peak_in_flight", "kv_usage_peak", "kv_usage_mean")


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One level's row from its repeats: the median of every figure, failures summed, each repeat's figures kept.

    The answers compared with C=1 are the first repeat's (greedy decoding: the repeats' answers match).
    """
    if len(rows) == 1:
        return rows[0]
    out = dict(rows[0])
    for key in MEDIAN_KEYS:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = percentile(values, 0.5)
    out["failed_runs"] = sum(r["failed_runs"] for r in rows)
    out["repeats"] = [{k: r[k] for k in ("tasks_per_min", "p50_s", "p95_s", "sot_runs")} for r in rows]
    return out


async def run_bench(
    backend: Any, n_tasks: int, levels: list[int], series: list[str], opts: dict[str, Any],
    progress: Callable[[dict[str, Any]], None] | None = None, repeats: int = 1,
) -> dict[str, Any]:
    from vivace.agents import ask

    tasks = questions(n_tasks)
    for mode in series:  # warm-up (router embedder, engine paths), not reported
        await ask(tasks[0], backend, mode=mode, **{**opts, "max_tokens": min(32, opts["max_tokens"])})
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in series}
    load_start = os.getloadavg()
    for level in levels:  # series interleaved per level and repeat, so drift in machine load hits all alike
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in series}
        for _ in range(repeats):
            for name in series:
                row = await run_level(backend, name, tasks, level, opts)
                runs[name].append(row)
                if progress:
                    progress(row)
        for name in series:
            out[name].append(median_row(runs[name]))
    for rows in out.values():
        add_ratios(rows)
    comparison = compare_auto(out)
    normal16 = next((r for r in out.get("normal", []) if r["concurrency"] == 16), None)
    return {
        "bench": "load",
        "series": out,
        "auto_vs_best": comparison,
        "repeats": repeats,
        "targets": {
            f"normal_c16_tasks_per_min>={TARGET_NORMAL_C16_MIN:g}x_c1": (
                None if not normal16 or normal16["speedup_vs_1"] is None else normal16["speedup_vs_1"] >= TARGET_NORMAL_C16_MIN
            ),
        },
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }


def compare_auto(series: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per level: auto's throughput and p50 against the better of normal and sot (both must be at least as good)."""
    out: list[dict[str, Any]] = []
    others = [name for name in ("normal", "sot") if name in series]
    if "auto" not in series or not others:
        return out
    for row in series["auto"]:
        peers = [r for name in others for r in series[name] if r["concurrency"] == row["concurrency"]]
        if not peers or row["tasks_per_min"] is None:
            continue
        best_tpm = max(r["tasks_per_min"] or 0.0 for r in peers)
        best_p50 = min(r["p50_s"] for r in peers)
        out.append({
            "concurrency": row["concurrency"],
            "auto_tasks_per_min": row["tasks_per_min"], "best_tasks_per_min": best_tpm,
            "auto_p50_s": row["p50_s"], "best_p50_s": best_p50,
            "throughput_ok": row["tasks_per_min"] >= best_tpm, "p50_ok": row["p50_s"] <= best_p50,
            "throughput_ratio": row["tasks_per_min"] / best_tpm if best_tpm else None,
            "p50_ratio": row["p50_s"] / best_p50 if best_p50 else None,
        })
    return out


def plot(report: dict[str, Any], out_dir: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not report["series"]:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in report["series"].items():
        xs = [r["concurrency"] for r in rows]
        left.plot(xs, [r["tasks_per_min"] for r in rows], marker="o", label=name)
        right.plot(xs, [r["p50_s"] for r in rows], marker="o", label=f"{name} p50")
        right.plot(xs, [r["p95_s"] for r in rows], marker="x", linestyle="--", label=f"{name} p95")
    left.set(xlabel="concurrent tasks", ylabel="tasks per minute", title="throughput")
    right.set(xlabel="concurrent tasks", ylabel="seconds", title="task latency")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / "load.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
