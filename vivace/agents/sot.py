"""The SoT controller: START -route-> normal, or -route-> points (skeleton, expansions, join; else normal decoding).

It is an agent like any other (``SotAgent``, registered as ``sot``): the run
driver runs it as a step, its calls go through the call path (so each gets its
own context decision), and its stage events join the run's one event stream.
Point expansions run as concurrent tasks of one stage (``sot_points``), so
the backend batches them (decoding is bandwidth-bound: 8 streams cost about
1.4x one). Their prompts share instructions, question and skeleton first and
put the point last, so the engine's prefix cache serves the shared part. In
``auto`` the route also weighs the engine's load (``sot_load``): the batch's
free slots cap the points, or send the question to normal decoding. The
graph is compiled once per process; the run's context travels in LangGraph's
runtime context.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import lru_cache
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from vivace.agents import guard
from vivace.agents.base import Agent, AgentContext, Node, StepInput, current_step, task_text
from vivace.agents.events import (
    AgentDelta,
    AnswerDelta,
    AnswerDone,
    BranchDelta,
    BranchDone,
    ErrorEvent,
    StepEvent,
    Routed,
    SkeletonDone,
)
from vivace.agents.length_plan import record_normal
from vivace.agents.router import NORMAL, SOT
from vivace.agents.skeleton import MIN_POINTS, Skeleton, parse_skeleton, strip_echo, trim_partial_sentence
from vivace.agents.sot_options import GUARD_REFUSAL, SotOptions
from vivace.agents.sot_route import decide
from vivace.agents.sot_state import AGENT, Context, Expansion, State
from vivace.agents.journal import digest
from vivace.errors import InputError, RunError
from vivace.runtime.call import Call
from vivace.runtime.prompts import render
from vivace.trace import CallTrace

log = logging.getLogger(__name__)

SKELETON_PROMPT = "sot_skeleton"
POINT_PROMPT = "sot_point"


@lru_cache(maxsize=64)
def _number_stops(last: int) -> tuple[str, ...]:
    """``\n1.`` to ``\n{last}.``: built once per count, not per point (a run of N points would build N^2)."""
    return tuple(f"\n{j}." for j in range(1, last + 1))


def skeleton_listing(points: list[str]) -> str:
    return "\n".join(f"{i}. {p}" for i, p in enumerate(points, 1))


async def route_entry(state: State, runtime: Runtime[Context]) -> str:
    """The graph's entry edge: pick the first node, the user's mode or the router's, and say which and why.

    An edge, not a node: a node is a superstep of its own (about 0.12 ms a run
    in LangGraph, ``vivace bench overhead``), and the decision writes nothing
    the graph's state needs. Its time is the run's ``route`` stage.
    """
    ctx = runtime.context
    requested = ctx.options.mode
    route = await decide(ctx.agent, state["question"], ctx.options)
    ctx.options, ctx.plan, ctx.claim = route.options, route.plan, route.claim
    ctx.emit(Routed(state["run_id"], mode=route.mode, reason=route.reason, load=route.load, requested_mode=requested))
    log.debug("run %s routed to %s: %s", state["run_id"], route.mode, route.reason)
    ctx.stages["route"] = route.seconds
    return "points" if route.mode == SOT else "normal"


def skeleton_call(ctx: Context, question: str) -> tuple[Call, str | None]:
    """The skeleton's call and its prefill (no repetition penalty: it collapses a numbered list)."""
    opts = ctx.options
    count = str(min(ctx.plan.points, opts.max_points)) if ctx.plan is not None else "4 to 8"  # the load may cap it
    messages, prefill = render(SKELETON_PROMPT, question=question, count=count)
    call = Call(
        messages=messages,
        prefill=prefill,
        max_tokens=min(opts.skeleton_tokens(), max(opts.max_tokens, 16)),
        temperature=opts.temperature,
        repetition_penalty=1.0,
        stop=("\n\n", f"\n{opts.max_points + 1}."),
        node=ctx.node("skeleton"),
        agent=ctx.name,
        query=question,
        downstream=1,  # the points wait for it
    )
    return call, prefill


def skeleton_done(ctx: Context, run_id: str, raw: str, trace: CallTrace | None) -> Skeleton:
    """Parse the finished skeleton, record its point count on the call (None: taken from a checkpoint), announce it."""
    opts = ctx.options
    parsed = parse_skeleton(raw, max_points=opts.max_points, min_points=opts.min_points)
    if trace is not None:
        trace.extra["points"] = len(parsed.points)
    ctx.release(keep=len(parsed.points) - 1 if parsed.fallback is None else 0)  # the skeleton's slot is free again
    if parsed.fallback is None and opts.safety_guard and guard.refused(" ".join(parsed.points)):
        # The model refused in its skeleton: expanding the points would hand each fragment to a call that
        # no longer sees the refusal. The refusal is the answer (``guard_answer``).
        ctx.emit(SkeletonDone(run_id, points=[], text=raw, fallback=GUARD_REFUSAL, call=trace))
        ctx.emit(AnswerDone(run_id, answer=" ".join(parsed.points), mode=SOT, points=[]))
        return Skeleton(points=[], raw=raw, fallback=GUARD_REFUSAL, dropped=parsed.points)
    ctx.emit(SkeletonDone(run_id, points=parsed.points, text=raw, fallback=parsed.fallback, call=trace))
    if parsed.fallback:
        log.info("run %s falls back to normal decoding: %s", run_id, parsed.fallback)
    return parsed


def guard_answer(parsed: Skeleton) -> dict[str, Any]:
    """The state's answer when the guard stopped a refused skeleton (nothing when it did not)."""
    return {"answer": " ".join(parsed.dropped)} if parsed.fallback == GUARD_REFUSAL else {}


async def expand_point(ctx: Context, run_id: str, question: str, points: list[str], index: int,
                       total: int | None, listing: str | None = None) -> Expansion:
    """Expand point ``index`` given the skeleton's ``points`` so far (``total``: their final count, if known).

    ``listing`` is ``points`` as the prompt lists them, built once for all the
    points that start together. A failure is marked on the point and reported,
    not raised (unless asked).
    While the count is open (pipelined SoT), other points' numbers up to the
    cap end the expansion, and it gets a 3-point answer's budget.
    """
    write, opts = ctx.emit, ctx.options
    point = points[index - 1]
    started = time.time()
    n = total or (min(ctx.plan.points, opts.max_points) if ctx.plan is not None else max(index, MIN_POINTS + 1))
    if ctx.plan is not None:  # equal shares of the expected length, with a floor: the branches finish together
        (max_tokens, min_tokens), sentences = ctx.plan.point_budget(n), f"about {ctx.plan.sentences(n)}"
    else:
        max_tokens, min_tokens, sentences = opts.point_tokens(n), None, "2 to 4"
    part = f"point.{index}.{digest(point)}"
    if (saved := await ctx.restore(part)) is not None:  # expanded before the run stopped
        ctx.release()
        write(BranchDone(run_id, index=index, point=point, text=saved["text"], call=None))
        return Expansion(index, point, saved["text"], None, started, time.time())
    messages, prefill = render(POINT_PROMPT, question=question, skeleton=listing or skeleton_listing(points), index=index,
                               point=point, sentences=sentences)
    numbers = _number_stops((total or opts.max_points) + 1)
    call = Call(
        messages=messages,
        prefill=prefill,
        max_tokens=max_tokens,
        min_tokens=min_tokens,
        temperature=opts.temperature,
        repetition_penalty=opts.repetition_penalty,
        stop=("\n\n", *numbers[: index - 1], *numbers[index:]),  # another point's number ends this one
        node=ctx.node("expand"),
        agent=ctx.name,
        branch=index,
        query=f"{question} {point}",
    )
    ctx.release()
    try:
        async with asyncio.timeout(opts.branch_timeout_s):
            result, trace = await ctx.send(call, lambda text: write(BranchDelta(run_id, index=index, text=text)))
    except Exception as exc:  # CancelledError is not an Exception: Ctrl-C still cancels every branch
        message = f"timed out after {opts.branch_timeout_s} s" if isinstance(exc, TimeoutError) else (str(exc) or type(exc).__name__)
        log.warning("run %s: point %d failed: %s", run_id, index, message)
        write(ErrorEvent(run_id, node="expand", message=message, branch=index))
        write(BranchDone(run_id, index=index, point=point, text="", call=None, error=message))
        if opts.fail_on_branch_error:
            raise RunError(f"point {index} ({point!r}) failed: {message}", ctx.name, ctx.step) from exc
        return Expansion(index, point, "", message, started, time.time())
    text = strip_echo(result.text, index, points)
    paragraph, _, rest = text.strip().partition("\n\n")
    if rest.strip():  # a blank line ends a point: the plan's floor held its stop off, and what follows is past it
        text = paragraph
    elif result.finish_reason == "length":
        text = trim_partial_sentence(text)
    await ctx.keep(part, {"text": text})
    write(BranchDone(run_id, index=index, point=point, text=text, call=trace))
    return Expansion(index, point, text, None, started, time.time())


async def normal_node(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Plain decoding of the question itself: the baseline a user gets without vivace."""
    ctx = runtime.context
    write, opts = ctx.emit, ctx.options
    run_id = state["run_id"]
    t0 = time.perf_counter()
    call = Call(
        messages=[{"role": "user", "content": state["question"]}],
        max_tokens=opts.max_tokens,
        temperature=opts.temperature,
        repetition_penalty=opts.repetition_penalty,  # greedy decoding of the small model loops without it
        node=ctx.node("normal"),
        agent=ctx.name,
        query=state["question"],
    )
    ctx.release()
    try:
        result, trace = await ctx.send(call, lambda text: write(AnswerDelta(run_id, text=text)))
    except Exception as exc:
        write(ErrorEvent(run_id, node="normal", message=str(exc) or type(exc).__name__))
        raise
    answer = result.text.strip()
    if result.finish_reason == "stop":  # a whole normal answer: its length plans the SoT runs of questions like it
        record_normal(ctx.agent, state["question"], trace.output_tokens)
    write(AnswerDone(run_id, answer=answer, mode=NORMAL, points=[], call=trace))
    return {"answer": answer, "stages": {"normal": time.perf_counter() - t0}}


def build_graph() -> StateGraph[State, Context, State, State]:
    """The uncompiled controller graph, for embedding as a subgraph or extending."""
    from vivace.agents.sot_points import points_node

    graph = StateGraph(State, context_schema=Context)
    graph.add_node("points", points_node)
    graph.add_node("normal", normal_node)
    graph.add_conditional_edges(START, route_entry, ["points", "normal"])  # async: a sync edge runs in a thread pool
    graph.add_edge("points", END)  # an unusable skeleton falls back to normal decoding inside the stage
    graph.add_edge("normal", END)
    return graph


_COMPILED: Any = None
_TEXT = (AnswerDelta, BranchDelta)  # the streamed text a SoT run mirrors as its step's AgentDelta


def controller() -> Any:
    """The compiled controller, built once per process (compiling costs more than a run)."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = build_graph().compile(name="vivace-sot")
    return _COMPILED


def initial_state(question: str, run_id: str) -> State:
    return State(run_id=run_id, question=question, stages={})


class SotAgent(Agent):
    """The Skeleton-of-Thought controller (router, skeleton, parallel points) as one agent."""

    name = AGENT
    description = "Skeleton-of-Thought controller: a skeleton, then its points expanded in parallel."

    def build(self, ctx: AgentContext) -> Node:
        options = SotOptions.for_run(ctx)  # bad options fail here, before any call

        async def node(inp: StepInput) -> str:
            run = current_step()
            step, name = (run.step, run.agent) if run else (AGENT, self.name)
            meta = ctx.tracer.meta
            meta.update(requested_mode=options.mode, router=None, points=[], fallback=None, failed_points={},
                        length_plan=None, stages={})

            def emit(event: StepEvent) -> None:
                """Record the stages in the run's meta, pass the event on as this step's, mirror text as its text."""
                event.step = step
                if type(event) in _TEXT:  # per token: the hot path
                    ctx.tracer.emit(event)
                    ctx.tracer.forward(AgentDelta(ctx.tracer.run_id, step=step, agent=name, text=event.text,  # type: ignore[attr-defined]
                                               branch=getattr(event, "index", None)))
                    return
                if isinstance(event, Routed):
                    meta["router"], meta["mode"] = {"mode": event.mode, "reason": event.reason}, event.mode
                    if event.load is not None:
                        meta["router"]["load"] = event.load
                elif isinstance(event, SkeletonDone):
                    meta.update(points=list(event.points), skeleton=event.text, fallback=event.fallback)
                    if event.fallback and event.fallback != GUARD_REFUSAL:
                        meta["mode"] = NORMAL
                elif isinstance(event, BranchDone) and event.error:
                    meta["failed_points"][event.index] = event.error
                ctx.tracer.emit(event)

            question = task_text(inp)
            if not question.strip():
                raise InputError("the question is empty")
            t0 = time.perf_counter()
            final: dict[str, Any] = {}
            run_ctx = Context(ctx, options, emit, step, name)
            try:
                final = await controller().ainvoke(initial_state(question, ctx.tracer.run_id), context=run_ctx)
            finally:
                if run_ctx.claim is not None:
                    run_ctx.claim.close()
                meta["stages"] = {**run_ctx.stages, **(final.get("stages") or {}), "total": time.perf_counter() - t0}
                if run_ctx.plan is not None:
                    meta["length_plan"] = run_ctx.plan.as_dict()
            return str(final.get("answer", ""))

        return node
