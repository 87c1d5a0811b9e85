"""Run an agent or pipeline on a task and return its RunTrace, with per-agent attribution.

Why a RunTrace: ``vivace run --json``, runs.jsonl and the benchmarks read the
same record as ``vivace ask``. Besides the calls, ``meta`` holds the step runs,
a per-agent summary, the critical path and the parallelism achieved (the sum
of call times over the wall time: 1.0 means nothing overlapped).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from vivace.agents.base import Agent, AgentContext, AgentError, StepRun, Tracer
from vivace.agents.events import Event
from vivace.agents.pipeline import Pipeline, single
from vivace.config import Config
from vivace.errors import InputError
from vivace.runtime.backend import Backend
from vivace.trace import CallTrace, RunTrace

log = logging.getLogger(__name__)


def resolve(target: str | Agent) -> Agent:
    """An Agent from a registry name or a pipeline TOML file path (validated before any model call)."""
    from vivace.agents.registry import REGISTRY

    if isinstance(target, Agent):
        found = target
    elif target.endswith(".toml"):
        found = Pipeline.from_toml(target)
    else:
        found = REGISTRY.get(target)
    if isinstance(found, Pipeline):
        found.validate()
    return found


async def run_agent(
    target: str | Agent,
    task: str,
    *,
    backend: Backend,
    config: Config,
    on_event: Callable[[Event], None] | None = None,
    collection: str | None = None,
    options: dict[str, Any] | None = None,
    history_budget_tokens: int = 1024,
    retriever: Any = None,
    compressor: Any = None,
) -> RunTrace:
    """Run ``target`` on ``task``. An agent failing raises ``AgentError`` whose ``trace`` has the calls so far."""
    if not task or not task.strip():
        raise InputError("the task is empty")
    item = resolve(target)
    pipeline = single(item)
    trace = RunTrace(question=task.strip(), mode=f"agent:{item.name}", model=backend.model, backend=backend.name)
    tracer = Tracer(trace.run_id, on_event)
    ctx = AgentContext(backend=backend, config=config, tracer=tracer, retriever=retriever, compressor=compressor,
                       collection=collection, history_budget_tokens=history_budget_tokens, options=dict(options or {}))
    graph = pipeline.compile(ctx)  # outside the clock: the first one imports LangGraph (~1.4 s here)
    t0 = time.perf_counter()
    try:
        result, state = await pipeline.invoke(trace.question, ctx, graph)
    except BaseException as exc:
        _finish(trace, tracer, item, t0)
        message = str(exc) or type(exc).__name__
        trace.error = message
        if isinstance(exc, AgentError):
            exc.trace = trace
            raise
        if isinstance(exc, Exception):
            raise AgentError(f"agent {item.name!r} failed: {message}", item.name, trace=trace) from exc
        raise  # cancellation, Ctrl-C: the caller still has the trace through on_event / tracer
    trace.answer = result
    _finish(trace, tracer, item, t0)
    trace.meta["messages"] = state.get("messages", [])
    if not result.strip():
        log.warning("agent %s returned an empty result", item.name)
    return trace


def _finish(trace: RunTrace, tracer: Tracer, item: Agent, t0: float) -> None:
    trace.latency_s = time.perf_counter() - t0
    trace.calls = sorted(tracer.calls, key=lambda c: (c.started_at, c.branch or 0))
    trace.meta.update(
        agent=item.name,
        steps=[r.to_dict() for r in tracer.runs],
        agents=agent_summary(trace.calls, tracer.runs),
        critical_path_s=critical_path(tracer.runs),
        parallelism=parallelism(trace.calls, trace.latency_s),
    )


def parallelism(calls: list[CallTrace], wall_s: float) -> float:
    """Sum of call times over wall time: how many calls were in flight on average."""
    return round(sum(c.e2e_s for c in calls) / wall_s, 3) if wall_s > 0 else 0.0


def _union(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def agent_summary(calls: list[CallTrace], runs: list[StepRun]) -> list[dict[str, Any]]:
    """Per agent: wall time it was active (overlapping runs counted once), its calls and tokens."""
    names = list(dict.fromkeys([r.agent for r in runs] + [c.agent for c in calls]))
    out = []
    for name in names:
        mine = [c for c in calls if c.agent == name]
        spans = [(r.started_at, r.ended_at or r.started_at) for r in runs if r.agent == name]
        spans = spans or [(c.started_at, c.ended_at) for c in mine]
        out.append({
            "name": name,
            "runs": sum(1 for r in runs if r.agent == name),
            "latency_s": round(_union(spans), 6),
            "calls": len(mine),
            "prompt_tokens": sum(c.prompt_tokens for c in mine),
            "output_tokens": sum(c.output_tokens for c in mine),
            "call_s": round(sum(c.e2e_s for c in mine), 6),
        })
    return out


def critical_path(runs: list[StepRun]) -> float:
    """The longest chain of dependent top-level step runs, by wall time: the run's floor at full overlap."""
    top = sorted((r for r in runs if r.parent is None and r.ended_at), key=lambda r: r.started_at)
    best: dict[int, float] = {}
    for r in top:
        best[r.id] = r.seconds + max((best[d] for d in r.deps if d in best), default=0.0)
    return round(max(best.values(), default=0.0), 6)


def json_record(trace: RunTrace) -> dict[str, Any]:
    """The ``vivace run --json`` object."""
    meta = trace.meta
    return {
        "agent": meta.get("agent"),
        "result": trace.answer,
        "latency_s": trace.latency_s,
        "critical_path_s": meta.get("critical_path_s"),
        "parallelism": meta.get("parallelism"),
        "prompt_tokens": trace.prompt_tokens,
        "output_tokens": trace.output_tokens,
        "calls": [c.to_dict() for c in trace.calls],
        "agents": meta.get("agents", []),
        "steps": meta.get("steps", []),
        "run_id": trace.run_id,
        "model": trace.model,
        "backend": trace.backend,
        "error": trace.error,
    }
