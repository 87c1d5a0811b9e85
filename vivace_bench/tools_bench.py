"""``bench tools``: tool-using tasks, LangGraph's prebuilt ReAct agent against vivace's ``tools`` agent.

Why side by side in one process: one engine, greedy decoding, the same
tools (the same functions, the same set latencies) and the same token
budget per call; only the orchestration changes. Task by task, every
configuration runs back to back (the first one rotating), so a swing in the
machine's load hits a task's configurations alike. The pure-tool cache is
cleared before every run, so a hit is a repeat within that run, never a
result another task or configuration left behind.

- ``react-langgraph`` (the baseline): ``create_react_agent`` over a LangChain
  chat model whose every turn is one call through vivace's call path
  (``vivace_bench.lc_model``): grammar-constrained tool calls on this engine,
  the prompt of vivace's own ReAct mode, no cache.
- ``react``: vivace's ReAct mode; ``plan``: one planned graph of calls,
  dispatched after the plan; ``plan+stream``: each call dispatched as its
  entry completes in the stream; ``plan+cache``: with the pure-tool cache;
  ``vivace``: everything on, ``tool_mode = auto``.

Every figure is read off the traces (``CallTrace``, ``ToolTrace``): the time
split is the union of the model calls' intervals, of the tool calls', their
overlap, and what is left of the task's latency (orchestration, waits).
"""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, cast

from vivace.compression.base import merge_spans
from vivace_bench.stats import median, percentile, rate
from vivace_bench.tools_workload import CALCULATE_S, LOOKUP_S, ToolTask, make_tools, score

if TYPE_CHECKING:
    from vivace.trace import RunTrace

_OFF = {"stream_dispatch": False, "tool_cache": False}
CONFIGS: dict[str, dict[str, Any] | None] = {
    "react-langgraph": None,
    "react": {"tool_mode": "react", **_OFF},
    "plan": {"tool_mode": "plan", **_OFF},
    "plan+stream": {"tool_mode": "plan", "stream_dispatch": True, "tool_cache": False},
    "plan+cache": {"tool_mode": "plan", "stream_dispatch": False, "tool_cache": True},
    "vivace": {"tool_mode": "auto", "stream_dispatch": True, "tool_cache": True},
}
BASELINE = "react-langgraph"
SPLIT = ("model_wall_s", "tool_wall_s", "overlap_s", "other_s")


@dataclass
class Setup:
    """What every run of a bench shares: the runtime, its tools, the baseline's compiled graph, the budgets."""

    runtime: Any
    tools: list[Any]
    max_tokens: int
    turn_tokens: int  # one ReAct turn's cap: vivace's own, under the bench's budget
    recursion_limit: int
    graph: Any


def setup(runtime: Any, max_tokens: int, scale: float = 1.0) -> Setup:
    """The tools registered on the runtime (their cap and cache are its own) and the baseline built once."""
    from langchain_core.messages import SystemMessage
    from langgraph.prebuilt import create_react_agent

    from vivace.agents.tools_agent import PLAN_TOKENS, REACT_STEPS
    from vivace_bench.lc_model import VivaceChatModel, lc_tools
    from vivace.runtime.prompts import render

    tools = runtime.tools.resolve(make_tools(scale))
    turn = min(PLAN_TOKENS, max_tokens)
    system = render("tools_react", task="")[0][0]["content"]  # the same instructions as vivace's ReAct mode
    model = VivaceChatModel(runtime=runtime, max_tokens=turn)
    with warnings.catch_warnings():  # "moved to langchain.agents": the prebuilt agent is still what users run
        warnings.simplefilter("ignore")
        graph = create_react_agent(model, lc_tools(runtime, tools), prompt=SystemMessage(system))
    # as many tool turns as vivace's ReAct allows: each is a model node and a tools node, then the last answer
    return Setup(runtime, tools, max_tokens, turn, 2 * REACT_STEPS + 1, graph)


async def _run_langgraph(s: Setup, task: str) -> tuple[list[Any], list[Any], str, float, str | None, dict[str, Any]]:
    from langchain_core.messages import HumanMessage

    from vivace.errors import BackendError
    from vivace.runtime.call import Scope, enter_scope, leave_scope

    calls: list[Any] = []
    tools: list[Any] = []
    scope = Scope(run_id=f"lg-{time.monotonic_ns()}", compression="off", record=calls.append,
                  record_tool=tools.append)
    answer, error = "", None
    token = enter_scope(scope)  # LangGraph's node tasks inherit it: the model's calls and the tools record here
    t0 = time.perf_counter()
    try:
        state = await s.graph.ainvoke({"messages": [HumanMessage(task)]}, {"recursion_limit": s.recursion_limit})
        last = state["messages"][-1]
        answer = last.content if isinstance(last.content, str) else str(last.content)
    except BackendError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken reply or the step limit is the task's failure, not the bench's
        error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        latency = time.perf_counter() - t0
        leave_scope(token)
    return calls, tools, answer, latency, error, {"mode": "react"}


async def _run_vivace(s: Setup, task: str, options: dict[str, Any]) -> tuple[list[Any], list[Any], str, float,
                                                                            str | None, dict[str, Any]]:
    from vivace.agents.driver import run
    from vivace.errors import BackendError, RunError

    try:
        trace = await run("tools", task, s.runtime, tools=s.tools, options={**options, "max_tokens": s.max_tokens},
                          compression="off")
        error = None
    except RunError as exc:
        if isinstance(exc.__cause__, BackendError):
            raise
        trace, error = cast("RunTrace", exc.trace), str(exc)[:300]
    return trace.calls, trace.tools, trace.answer if error is None else "", trace.latency_s, error, \
        dict(trace.meta.get("tools_agent") or {})


async def run_one(s: Setup, t: ToolTask, config: str, repeat: int = 0) -> dict[str, Any]:
    """One task under one configuration, its figures read off its traces."""
    s.runtime.tool_path.clear_cache()
    options = CONFIGS[config]
    if options is None:
        calls, tools, answer, latency, error, meta = await _run_langgraph(s, t.task)
    else:
        calls, tools, answer, latency, error, meta = await _run_vivace(s, t.task, options)
    return {"id": t.id, "kind": t.kind, "repeat": repeat, "config": config, "latency_s": round(latency, 4),
            "answer": answer, "correct": error is None and score(answer, t.expected, t.candidates), "error": error,
            "mode": meta.get("mode"), "why": meta.get("why"), "replans": meta.get("replans", 0),
            **figures(calls, tools, latency)}


def _length(spans: Sequence[tuple[float, float]]) -> float:
    return sum(b - a for a, b in spans)


def _overlap(xs: Sequence[tuple[float, float]], ys: Sequence[tuple[float, float]]) -> float:
    return sum(max(0.0, min(b, d) - max(a, c)) for a, b in xs for c, d in ys)  # both are disjoint unions


def figures(calls: Sequence[Any], tools: Sequence[Any], latency: float) -> dict[str, Any]:
    """Counts, tokens and the time split of one run, from its ``CallTrace``s and ``ToolTrace``s."""
    # a reply the caller cut on purpose (a plan that repeats itself, ``StopGeneration``) broke no schema
    checked = [c for c in calls if isinstance(c.extra.get("output"), dict) and c.finish_reason != "cut"]
    model = merge_spans([(c.started_at, c.ended_at) for c in calls])
    tool = merge_spans([(t.started_at, t.ended_at) for t in tools])
    overlap = _overlap(model, tool)
    busy = _length(model) + _length(tool) - overlap
    return {"calls": len(calls), "tool_calls": len(tools), "prompt_tokens": sum(c.prompt_tokens for c in calls),
            "output_tokens": sum(c.output_tokens for c in calls), "schema_calls": len(checked),
            "schema_valid": sum(bool(c.extra["output"].get("valid")) for c in checked),
            "cut_calls": sum(c.finish_reason == "cut" for c in calls),
            "cache_hits": sum(bool(t.cache_hit) for t in tools), "tool_errors": sum(t.error is not None for t in tools),
            "model_s": round(sum(c.e2e_s for c in calls), 4), "tool_s": round(sum(t.seconds for t in tools), 4),
            "model_wall_s": round(_length(model), 4), "tool_wall_s": round(_length(tool), 4),
            "overlap_s": round(overlap, 4), "other_s": round(max(0.0, latency - busy), 4),
            # the records the figures came from, for a reader (and a test) to add up again
            "call_records": [{"node": c.node, "started_at": c.started_at, "e2e_s": c.e2e_s,
                              "prompt_tokens": c.prompt_tokens, "output_tokens": c.output_tokens,
                              "valid": (c.extra.get("output") or {}).get("valid"),
                              "finish_reason": c.finish_reason} for c in calls],
            "tool_records": [{"name": t.name, "arguments": t.arguments, "started_at": t.started_at,
                              "seconds": t.seconds, "cache_hit": t.cache_hit, "error": t.error} for t in tools]}


def _mean(xs: Sequence[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def summarize(config: str, results: list[dict[str, Any]], base: list[dict[str, Any]] | None) -> dict[str, Any]:
    """One configuration's row: latency, speed against the baseline task by task, accuracy, calls, time split."""
    lat = [r["latency_s"] for r in results]
    checked = sum(r["schema_calls"] for r in results)
    row: dict[str, Any] = {
        "config": config, "options": CONFIGS[config], "tasks": len(results), "p50_s": median(lat),
        "p95_s": percentile(lat, 0.95), "accuracy": rate([r["correct"] for r in results]),
        "failures": sum(r["error"] is not None for r in results),
        "schema_valid_rate": round(sum(r["schema_valid"] for r in results) / checked, 4) if checked else None,
        "cache_hits": sum(r["cache_hits"] for r in results),
        "modes": dict(Counter(str(r["mode"]) for r in results)),
        "replans": sum(r["replans"] or 0 for r in results),
        "per_task": {k: _mean([r[k] for r in results]) for k in ("calls", "tool_calls", "prompt_tokens",
                                                                 "output_tokens", "cache_hits", "tool_errors",
                                                                 "cut_calls")},
        "split_mean_s": {k: _mean([r[k] for r in results]) for k in ("model_s", "tool_s", *SPLIT)},
    }
    row.update(_speed(results, base or results))
    kinds = sorted({r["kind"] for r in results})
    row["by_kind"] = {k: {"tasks": sum(r["kind"] == k for r in results),
                          "p50_s": median([r["latency_s"] for r in results if r["kind"] == k]),
                          "accuracy": rate([r["correct"] for r in results if r["kind"] == k])["rate"],
                          **_speed([r for r in results if r["kind"] == k], [b for b in base or results
                                                                            if b["kind"] == k])}
                      for k in kinds}
    row["results"] = results
    return row


def _speed(results: list[dict[str, Any]], base: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median of per-task ratios (baseline latency / this one) and the ratio of the medians."""
    mine = {(r["id"], r["repeat"]): r["latency_s"] for r in results}
    ratios = [b["latency_s"] / mine[(b["id"], b["repeat"])] for b in base
              if mine.get((b["id"], b["repeat"])) not in (None, 0)]
    p50, base_p50 = median(list(mine.values())), median([b["latency_s"] for b in base])
    return {"speedup_median": round(cast(float, median(ratios)), 3) if ratios else None,
            "speedup_of_medians": round(base_p50 / p50, 3) if p50 and base_p50 else None}


def _groups(configs: list[str]) -> list[str]:
    """One configuration per reply schema (ReAct turns, LangChain's tool specs, plan and join): the warm-up set."""
    seen, out = set(), []
    for c in configs:
        group = "lg" if c == BASELINE else ("react" if (CONFIGS[c] or {}).get("tool_mode") == "react" else "plan")
        if group not in seen:
            seen.add(group)
            out.append(c)
    return out


async def run_bench(runtime: Any, configs: list[str], tasks: list[ToolTask], max_tokens: int, repeats: int = 1,
                    progress: Callable[[dict[str, Any]], None] | None = None, scale: float = 1.0,
                    warmup: bool = True) -> dict[str, Any]:
    """Every task under every configuration (``repeats`` times), then one row per configuration."""
    from vivace.errors import InputError

    if not tasks:
        raise InputError("no tasks to run")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise InputError(f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    configs = [BASELINE, *[c for c in dict.fromkeys(configs) if c != BASELINE]]
    s = setup(runtime, max_tokens, scale)
    if warmup:  # imports, the first compile of each reply schema's grammar: outside every clock
        for config in _groups(configs):
            warm = await run_one(s, tasks[0], config)
            if progress:
                progress({**warm, "warmup": True})
    load_start = os.getloadavg()
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    n = 0
    for repeat in range(repeats):
        for t in tasks:
            for config in configs[n % len(configs):] + configs[:n % len(configs)]:
                result = await run_one(s, t, config, repeat)
                results[config].append(result)
                if progress:
                    progress(result)
            n += 1
    return {**partial(configs, [r for c in configs for r in results[c]]),
            "tasks": [{"id": t.id, "kind": t.kind, "task": t.task, "expected": vars(t.expected)} for t in tasks],
            "repeats": repeats, "max_tokens": max_tokens, "turn_tokens": s.turn_tokens,
            "recursion_limit": s.recursion_limit, "baseline": _baseline(s),
            "tool_latency_s": {"lookup": list(LOOKUP_S), "calculate": CALCULATE_S, "scale": scale},
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()]}


def _baseline(s: Setup) -> dict[str, Any]:
    """What the baseline is, for the report: the prebuilt agent, its versions, its defaults as a user gets them."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    return {"agent": "langgraph.prebuilt.create_react_agent", "langgraph": ver("langgraph"),
            "langgraph_prebuilt": ver("langgraph-prebuilt"), "langchain_core": ver("langchain-core"),
            "parallel_tool_calls": True, "tool_choice": "auto", "turn_tokens": s.turn_tokens,
            "recursion_limit": s.recursion_limit, "prompt": "vivace's tools_react system prompt", "cache": False}


def partial(configs: list[str], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows of the results so far (all of them at the end; what an interrupted bench got done)."""
    done = [c for c in configs if any(r["config"] == c for r in results)]
    base = [r for r in results if r["config"] == BASELINE]
    return {"bench": "tools", "configs": {c: CONFIGS[c] for c in configs},
            "rows": [summarize(c, [r for r in results if r["config"] == c], base or None) for c in done]}


def plot(report: dict[str, Any], out_dir: Path) -> Path:
    """Latency per configuration (median bar, p95 tick) and where a task's time goes (mean seconds, stacked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    names = [r["config"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    left.bar(names, [r["p50_s"] or 0 for r in rows], label="median", color="#4c72b0")
    left.scatter(names, [r["p95_s"] or 0 for r in rows], color="black", marker="_", s=400, label="p95")
    left.set_ylabel("task latency, s")
    left.set_title("latency (accuracy above the bars)")
    for i, r in enumerate(rows):
        left.annotate(f"{(r['accuracy']['rate'] or 0):.0%}", (i, r["p50_s"] or 0), ha="center", va="bottom")
    bottom = [0.0] * len(rows)
    labels = {"model_wall_s": "model only", "tool_wall_s": "tools only", "overlap_s": "model and tools at once",
              "other_s": "neither"}
    for key, label in labels.items():
        split = r_split = [(r["split_mean_s"][key] or 0) for r in rows]
        if key in ("model_wall_s", "tool_wall_s"):  # the union minus the overlap: exclusive seconds
            split = [v - (r["split_mean_s"]["overlap_s"] or 0) for v, r in zip(r_split, rows)]
        right.bar(names, split, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, split)]
    right.set_ylabel("mean seconds per task")
    right.set_title("where the time goes")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    path = out_dir / "tools.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
