"""The one run driver: anything runnable (an agent, a pipeline, the SoT controller) on a task.

Why one: ``vivace ask``, ``vivace run``, the TUI, the benches and library
users all get the same run record (``RunTrace``: calls, per-agent summary,
critical path, parallelism, status), the same event stream, the same error
type (``RunError``, carrying the partial trace), and the same promise: every
run leaves its record in ``runs.jsonl`` (and ``trace_out``), also when it
fails or is interrupted, with the text streamed so far.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from vivace.agents.base import Agent, AgentContext, StepRun, Tracer
from vivace.agents.durable import check_same, checkpoint_end, durable_meta, gated_steps, header
from vivace.agents.events import Event, RunFinished, RunStarted
from vivace.agents.history import fit_turns
from vivace.agents.journal import ApprovalPending, Approver, Journal, enter_journal, leave_journal
from vivace.agents.options import RunOptions
from vivace.agents.pipeline.spec import Pipeline, single
from vivace.agents.pipeline.step_model import check_models, check_tools
from vivace.errors import InputError, RunError, VivaceError, missing_extra
from vivace.runtime.call import COMPRESSION_MODES, Scope, enter_scope, leave_scope
from vivace.runtime.load import sharing
from vivace.trace import AgentSummary, CallTotals, CallTrace, ModelInfo, ModelSummary, RunTrace, StepRecord, save_run

if TYPE_CHECKING:
    from vivace.runtime.checkpoints import StoredRun
    from vivace.runtime.runtime import Runtime

log = logging.getLogger(__name__)

DEFAULT_HISTORY_BUDGET = 1024


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


async def run(
    target: str | Agent,
    task: str,
    runtime: "Runtime",
    *,
    on_event: Callable[[Event], None] | None = None,
    options: "RunOptions | Mapping[str, Any] | None" = None,
    collection: str | None = None,
    compression: str | None = None,
    history_budget_tokens: int = DEFAULT_HISTORY_BUDGET,
    trace_out: str | Path | None = None,
    on_finish: Callable[[RunTrace], None] | None = None,
    run_id: str | None = None,
    tools: "Sequence[Any] | None" = None,
    approve: Approver = None,
    thread: str | None = None,
    _resume: "StoredRun | None" = None,
) -> RunTrace:
    """Run ``target`` on ``task`` and return its trace.

    ``tools`` (``Tool`` objects, functions, or names of the runtime's tools)
    are what the run's steps may call when their definition names none.

    ``collection`` makes every call retrieve from it; ``compression``
    (off|auto|always, default the config's) applies to every call of the run,
    history included. A failure raises ``RunError`` whose ``trace`` holds the
    calls and text so far; a cancellation (Ctrl-C) propagates as is. Either
    way the run's record is saved first, and ``on_finish`` gets the trace.
    ``run_id`` names the run up front (a server puts it in its response
    header before the first token); by default the trace makes one.

    With checkpoints on (the config's ``checkpoints``), each finished step is
    saved as it finishes, so a killed or failed run can be finished by
    ``resume``. A step or tool that requires approval asks ``approve``
    ("all", "none", or a function of the ``Approval``); with none, the run
    pauses there (``status == "paused"``, ``meta["pending_approval"]``).
    ``thread`` names a conversation: its earlier turns (the newest that fit
    ``history_budget_tokens``) go before every call's own messages, and the
    run's answer becomes its next turn.
    """
    if not task or not task.strip():
        raise InputError("the task is empty")
    compression = compression or runtime.config.compression
    if compression not in COMPRESSION_MODES:
        raise InputError(f"compression must be one of {', '.join(COMPRESSION_MODES)}, got {compression!r}")
    if history_budget_tokens < 0:
        raise InputError("the history budget must not be negative")
    opts = RunOptions.parse(options)  # a misspelt or mistyped option fails here, in one line
    item = resolve(target)
    check_models(item, runtime.models, opts.model)  # an unknown model fails before any call
    run_tools = runtime.tools.resolve(tools or ())  # an unknown tool, too
    check_tools(item, runtime.tools)
    pipeline = single(item)
    if _resume is not None:
        check_same(_resume, pipeline)
    store = runtime.checkpoints()
    if store is None and approve is None and (gated := gated_steps(pipeline)):
        raise InputError(f"step {gated[0]!r} needs approval, and this run is not checkpointed, so it cannot pause: "
                         "pass approve ('all', 'none' or a function) or turn checkpoints on")
    backend = runtime.backend
    trace = RunTrace(question=task.strip(), mode=f"agent:{item.name}", model=backend.model, backend=backend.name)
    if run_id:
        trace.run_id = run_id
    tracer = Tracer(trace.run_id, on_event)
    scope = Scope(trace.run_id, collection, compression, history_budget_tokens, record=tracer.record_current,
                  record_tool=tracer.record_tool, tool_started=tracer.tool_started)
    if thread is not None:
        if not thread.strip() or len(thread) > 128 or not thread.isprintable():
            raise InputError("a thread id is 1 to 128 printable characters")
        if store is None:
            raise InputError("a thread needs checkpoints on (checkpoints = true): its turns are kept there")
        turns, dropped = await fit_turns(await store.turns(thread), backend, history_budget_tokens)
        scope.conversation = tuple(turns)
        trace.thread = {"id": thread, "turns": len(turns) // 2, "dropped": dropped}
    ctx = AgentContext(runtime, tracer, scope, opts, run_tools)
    graph = pipeline.compile(ctx)  # outside the clock: the first one imports LangGraph (~1.4 s here)
    journal = Journal(trace.run_id, store, dict(_resume.steps) if _resume else {}, approve)
    t0 = time.perf_counter()
    if store is not None:
        args = {"options": opts.as_dict(), "collection": collection, "compression": compression,
                "history_budget_tokens": history_budget_tokens, "tools": [t.name for t in run_tools],
                "thread": thread}
        await store.begin(trace.run_id, header(target, pipeline, trace.question, args),
                          {"agent": item.name, "task": trace.question[:200], "started_at": trace.started_at,
                           **({"resumed_from": _resume.run_id} if _resume else {})})
    tracer.emit(RunStarted(trace.run_id, question=trace.question, agent=item.name,
                           resumed_from=_resume.run_id if _resume else None))
    token, jtoken = enter_scope(scope), enter_journal(journal)
    try:
        with sharing(runtime):  # every run shares the batch, a pipeline's too: fan-out decisions divide it among them
            result, state = await pipeline.invoke(trace.question, ctx, graph)
        trace.answer = result
        trace.messages = list(state.get("messages", []))
    except ApprovalPending as pause:  # not a failure: the run waits at its checkpoint for a person
        trace.status = "paused"
        trace.meta["pending_approval"] = pause.approval.to_dict()
    except (asyncio.CancelledError, KeyboardInterrupt):
        trace.status, trace.error = "interrupted", "interrupted"
        raise
    except RunError as exc:
        trace.status, trace.error = "failed", str(exc)
        exc.trace = trace
        raise
    except Exception as exc:
        message = missing_extra(exc) or str(exc) or type(exc).__name__
        trace.status, trace.error = "failed", message
        code = exc.exit_code if isinstance(exc, VivaceError) else 1
        raise RunError(f"agent {item.name!r} failed: {message}", item.name, trace=trace, exit_code=code) from exc
    finally:
        leave_journal(jtoken)
        leave_scope(token)
        _finish(trace, tracer, item, t0, solo=len(pipeline.steps) == 1)
        trace.models = model_summary(trace.calls, runtime.models.describe)
        durable_meta(trace, journal, _resume)
        if runtime.save_runs:
            _save(trace, runtime, trace_out)
        if store is not None:
            await checkpoint_end(store, trace, run_record(trace), _resume, thread)
        tracer.emit(RunFinished(trace.run_id, status=trace.status, answer=trace.answer, latency_s=trace.latency_s,
                                error=trace.error))
        if on_finish is not None:
            on_finish(trace)
    if not trace.answer.strip():
        log.warning("agent %s returned an empty result", item.name)
    return trace


def _save(trace: RunTrace, runtime: "Runtime", trace_out: str | Path | None) -> None:
    try:
        save_run(run_record(trace), runtime.config.runs_dir, trace_out)
    except OSError as exc:  # the run itself is not lost for it: the caller still has the trace
        log.error("could not save the run's record: %s", exc)


def _finish(trace: RunTrace, tracer: Tracer, item: Agent, t0: float, solo: bool) -> None:
    trace.latency_s = time.perf_counter() - t0
    trace.calls = sorted(tracer.calls, key=lambda c: (c.started_at, c.branch or 0))
    trace.tools = sorted(tracer.tools, key=lambda t: t.started_at)
    sot = tracer.sot
    if solo and sot is not None and sot["mode"]:  # the SoT controller run on its own: the run's mode is the one it took
        trace.mode = sot["mode"]
    if trace.status != "done" and not trace.answer:
        trace.answer = tracer.partial_text()
    failed = sot["failed_points"] if sot is not None else {}
    if trace.error is None and failed:
        trace.error = "; ".join(f"point {i} failed: {msg}" for i, msg in sorted(failed.items()))
    trace.router, trace.points, trace.sot = tracer.router, list(tracer.points), sot
    trace.meta.update(tracer.meta)
    trace.agent = item.name
    trace.steps = [r.to_dict() for r in tracer.runs]
    trace.agents = agent_summary(trace.calls, tracer.runs)
    trace.critical_path_s, trace.critical_path = critical_chain(tracer.runs)
    trace.parallelism = parallelism(trace.calls, trace.latency_s)


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


def agent_summary(calls: list[CallTrace], runs: list[StepRun]) -> list[AgentSummary]:
    """Per agent: wall time it was active (overlapping runs counted once), its calls and tokens."""
    names = list(dict.fromkeys([r.agent for r in runs] + [c.agent for c in calls]))
    out: list[AgentSummary] = []
    for name in names:
        mine = [c for c in calls if c.agent == name]
        spans = [(r.started_at, r.ended_at or r.started_at) for r in runs if r.agent == name]
        spans = spans or [(c.started_at, c.ended_at) for c in mine]
        out.append({
            "name": name,
            "runs": sum(1 for r in runs if r.agent == name),
            "latency_s": round(_union(spans), 6),
            **_totals(mine),
            "models": list(dict.fromkeys(c.model for c in mine if c.model)),
        })
    return out


def _totals(calls: list[CallTrace]) -> CallTotals:
    """Calls, tokens, seconds in calls and seconds of those in queues (the limiter's and the engine's)."""
    return {
        "calls": len(calls),
        "prompt_tokens": sum(c.prompt_tokens for c in calls),
        "output_tokens": sum(c.output_tokens for c in calls),
        "call_s": round(sum(c.e2e_s for c in calls), 6),
        "queue_s": round(sum(c.queue_s for c in calls), 6),
    }


def model_summary(calls: list[CallTrace],
                  describe: Callable[[str], ModelInfo] | None = None) -> list[ModelSummary]:
    """Per model that served a call: its calls, tokens, seconds in calls and in queues, the agents that used it.

    ``describe`` adds what the model is (backend, weights, dtype, quantization),
    so two configurations of the same weights show as such.
    """
    out: list[ModelSummary] = []
    for name in dict.fromkeys(c.model or "default" for c in calls):
        mine = [c for c in calls if (c.model or "default") == name]
        info: ModelInfo = describe(name) if describe else {"name": name}
        out.append({
            **info,
            "name": name,
            "served_by": mine[0].served_by,
            **_totals(mine),
            "agents": list(dict.fromkeys(c.agent for c in mine if c.agent)),
        })
    return out


def critical_path(runs: list[StepRun]) -> float:
    """The longest chain of dependent top-level step runs, by wall time: the run's floor at full overlap."""
    return critical_chain(runs)[0]


def critical_chain(runs: list[StepRun]) -> tuple[float, list[int]]:
    """The critical path's length and its step runs' ids, first to last: which steps to speed up."""
    top = sorted((r for r in runs if r.parent is None and r.ended_at), key=lambda r: r.started_at)
    best: dict[int, tuple[float, int | None]] = {}  # run id -> (longest chain ending there, the run before it)
    for r in top:
        before = max((d for d in r.deps if d in best), key=lambda d: best[d][0], default=None)
        best[r.id] = (r.seconds + (best[before][0] if before is not None else 0.0), before)
    end = max(best, key=lambda i: best[i][0], default=None)
    total = best[end][0] if end is not None else 0.0
    chain: list[int] = []
    while end is not None:
        chain.append(end)
        end = best[end][1]
    return round(total, 6), chain[::-1]


def critical_steps(trace: RunTrace) -> list[StepRecord]:
    """The step records (``trace.steps``) on the run's critical path, first to last."""
    by_id = {s["id"]: s for s in trace.steps}
    return [by_id[i] for i in trace.critical_path if i in by_id]


def critical_path_text(trace: RunTrace) -> str | None:
    """``plan 1.05 s → research #1 1.59 s → write 15.09 s``: the path `vivace run` and the TUI print (None: one step)."""
    chain = critical_steps(trace)
    if len(chain) < 2:
        return None
    return " → ".join(f"{r['step']}{'' if r.get('branch') is None else ' #' + str(r['branch'])} {r['seconds']:.2f} s"
                      for r in chain)


def run_record(trace: RunTrace) -> dict[str, Any]:
    """The one record of a run: ``--json`` of ask and run, runs.jsonl, ``--trace-out``, the TUI transcript."""
    return {
        "run_id": trace.run_id,
        "status": trace.status,
        "error": trace.error,
        "agent": trace.agent,
        "mode": trace.mode,
        "question": trace.question,
        "answer": trace.answer,
        "started_at": trace.started_at,
        "latency_s": trace.latency_s,
        "ttft_s": trace.ttft_s,
        "critical_path_s": trace.critical_path_s,
        "critical_path": trace.critical_path,
        "parallelism": trace.parallelism,
        "prompt_tokens": trace.prompt_tokens,
        "output_tokens": trace.output_tokens,
        "tok_s": trace.output_tokens / trace.latency_s if trace.latency_s > 0 else 0.0,
        "model": trace.model,
        "backend": trace.backend,
        "router": trace.router,
        "points": trace.points,
        "sot": trace.sot,
        "thread": trace.thread,
        "checkpoint": trace.checkpoint,
        "approval_wait_s": trace.approval_wait_s,
        "calls": [c.to_dict() for c in trace.calls],
        "tools": [t.to_dict() for t in trace.tools],
        "agents": trace.agents,
        "models": trace.models,
        "steps": trace.steps,
        "messages": trace.messages,
        "meta": trace.meta,
    }


async def ask(
    question: str,
    runtime: "Runtime | Any",
    *,
    mode: str | None = None,
    on_event: Callable[[Event], None] | None = None,
    collection: str | None = None,
    compression: str | None = None,
    trace_out: str | Path | None = None,
    thread: str | None = None,
    **sot_options: Any,
) -> RunTrace:
    """One question through the SoT controller (``mode`` auto|sot|normal): ``run("sot", ...)`` with its options.

    ``runtime`` may also be a bare backend (tests, quick scripts): it then gets
    a default runtime that saves no run records. ``sot_options`` are
    ``max_tokens``, ``temperature``, ``repetition_penalty``, ``max_points``,
    ``min_points``, ``point_max_tokens``, ``skeleton_max_tokens``,
    ``branch_timeout_s`` and ``fail_on_branch_error``.
    """
    from vivace.runtime.runtime import Runtime

    if not question or not question.strip():
        raise InputError("the question is empty")
    if not isinstance(runtime, Runtime):
        from vivace.assembly import runtime_for
        from vivace.config import Config

        runtime = runtime_for(Config(), runtime, save_runs=False)
    options = RunOptions.parse(sot_options, mode=mode)
    return await run("sot", question, runtime, on_event=on_event, options=options, collection=collection,
                     compression=compression, trace_out=trace_out, thread=thread)
