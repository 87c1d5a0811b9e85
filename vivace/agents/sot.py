"""The controller: route -> normal, or route -> skeleton -> ``Send`` per point -> expand -> join.

Point expansions run as concurrent branches of one LangGraph superstep, so
the backend batches them (decoding is bandwidth-bound: 8 streams cost about
1.4x one). Their prompts share instructions, question and skeleton first and
put the point last, so the engine's prefix cache serves the shared part. The
graph is compiled once per process; the backend and options travel in the
run's LangGraph context, and events stream through ``stream_mode="custom"``.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Callable, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from vivace.agents import prompts
from vivace.agents.events import (
    AnswerDelta,
    AnswerDone,
    BranchDelta,
    BranchDone,
    ErrorEvent,
    Event,
    Routed,
    RunStarted,
    SkeletonDelta,
    SkeletonDone,
)
from vivace.agents.router import NORMAL, SOT, cue, route
from vivace.agents.skeleton import MIN_POINTS, join_points, parse_skeleton, strip_echo
from vivace.errors import BackendError, VivaceError
from vivace.runtime.backend import Backend, GenerationRequest, GenerationResult
from vivace.trace import CallTrace

log = logging.getLogger(__name__)

AGENT = "sot"
SKELETON_PROMPT = "sot_skeleton"
POINT_PROMPT = "sot_point"
# Per-point token bounds: long enough for 2-4 sentences, short enough that the
# slowest branch does not erase the parallel gain.
POINT_TOKENS_MIN, POINT_TOKENS_MAX = 40, 96
SKELETON_TOKENS_PER_POINT = 12


class ControllerError(VivaceError):
    """A run that could not produce an answer; ``trace`` keeps what was gathered."""

    def __init__(self, message: str, trace: Any = None) -> None:
        super().__init__(message)
        self.trace = trace


@dataclass
class Options:
    """How one run decodes. ``None`` budgets are derived from ``max_tokens`` and the point count."""

    mode: str = "auto"
    max_tokens: int = 512
    temperature: float = 0.0
    repetition_penalty: float = 1.15
    max_points: int = 8
    min_points: int = MIN_POINTS
    point_max_tokens: int | None = None
    skeleton_max_tokens: int | None = None
    branch_timeout_s: float | None = None
    fail_on_branch_error: bool = False
    # Retrieved (and maybe compressed) context, shared by every call of the run, and its record.
    context: str | None = None
    context_stats: dict[str, Any] | None = None

    def prompt_question(self, question: str) -> str:
        """The question as the prompts show it: with the context first when there is one."""
        if not self.context:
            return question
        from vivace.retrieval.rag import load_prompt

        return load_prompt("question_with_context").format(context=self.context.strip(), question=question).strip()

    def trace_extra(self) -> dict[str, Any]:
        return {"context": self.context_stats} if self.context_stats else {}

    def point_tokens(self, n_points: int) -> int:
        """Each point's share of the answer budget, kept within sensible bounds."""
        if self.point_max_tokens is not None:
            return self.point_max_tokens
        share = max(POINT_TOKENS_MIN, min(POINT_TOKENS_MAX, self.max_tokens // max(1, n_points)))
        return min(self.max_tokens, share)

    def skeleton_tokens(self) -> int:
        if self.skeleton_max_tokens is not None:
            return self.skeleton_max_tokens
        return SKELETON_TOKENS_PER_POINT * self.max_points + 16


@dataclass
class Context:
    """What every node of one run needs and LangGraph should not checkpoint."""

    backend: Backend
    options: Options


@dataclass
class Expansion:
    index: int
    point: str
    text: str
    error: str | None
    started: float
    ended: float


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    return {**left, **right}


class State(TypedDict, total=False):
    """The graph's state; list fields collect from concurrent branches."""

    run_id: str
    question: str
    mode: str
    route_reason: str
    skeleton: str
    points: list[str]
    fallback: str | None
    expansions: Annotated[list[Expansion], operator.add]
    calls: Annotated[list[CallTrace], operator.add]
    stages: Annotated[dict[str, float], _merge]
    answer: str


class Branch(TypedDict):
    """The payload ``Send`` hands one expansion."""

    run_id: str
    question: str
    points: list[str]
    index: int


async def _generate(backend: Backend, request: GenerationRequest, on_text: Callable[[str], None]) -> GenerationResult:
    """Stream one call, passing text on as it arrives; the backend's result is the trace's source."""
    result: GenerationResult | None = None
    async for event in backend.generate(request):
        if isinstance(event, GenerationResult):
            result = event
        elif event.text:
            on_text(event.text)
    if result is None:
        raise BackendError(f"{backend.name}: generation {request.tag!r} ended without a result")
    return result


def _skeleton_listing(points: list[str]) -> str:
    return "\n".join(f"{i}. {p}" for i, p in enumerate(points, 1))


def _trim_partial_sentence(text: str) -> str:
    """Drop a sentence cut by the token cap, when a complete one comes before it."""
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[: ends[-1]] if ends and ends[-1] >= len(text) // 3 else text


async def route_node(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Announce the run and pick its mode: the user's choice, or the router's for ``auto``."""
    write = get_stream_writer()
    opts = runtime.context.options
    t0 = time.perf_counter()
    write(RunStarted(state["run_id"], question=state["question"], requested_mode=opts.mode))
    if opts.mode in (SOT, NORMAL):
        mode, reason = opts.mode, f"requested with --mode {opts.mode}"
    elif cue(state["question"]) or not state["question"].strip():
        mode, reason = route(state["question"])  # decided by a cue: no embedding, no thread hop
    else:
        # Embedding (and, the first time, loading the embedder) runs off the event loop,
        # which also serves the engine's output handler.
        mode, reason = await asyncio.to_thread(route, state["question"])
    write(Routed(state["run_id"], mode=mode, reason=reason))
    log.debug("run %s routed to %s: %s", state["run_id"], mode, reason)
    return {"mode": mode, "route_reason": reason, "stages": {"route": time.perf_counter() - t0}}


def after_route(state: State) -> str:
    return "skeleton" if state["mode"] == SOT else "normal"


async def skeleton_node(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask for the skeleton (no repetition penalty: it collapses a numbered list) and parse it."""
    write = get_stream_writer()
    backend, opts = runtime.context.backend, runtime.context.options
    run_id = state["run_id"]
    t0 = time.perf_counter()
    messages, prefill = prompts.render(SKELETON_PROMPT, question=opts.prompt_question(state["question"]))
    request = GenerationRequest(
        messages=messages,
        prefill=prefill,
        max_tokens=min(opts.skeleton_tokens(), max(opts.max_tokens, 16)),
        temperature=opts.temperature,
        repetition_penalty=1.0,
        stop=["\n\n", f"\n{opts.max_points + 1}."],
        tag=f"{run_id}/skeleton",
    )
    if prefill:
        write(SkeletonDelta(run_id, text=prefill))
    try:
        result = await _generate(backend, request, lambda text: write(SkeletonDelta(run_id, text=text)))
    except Exception as exc:
        write(ErrorEvent(run_id, node="skeleton", message=str(exc) or type(exc).__name__))
        raise
    raw = (prefill or "") + result.text
    parsed = parse_skeleton(raw, max_points=opts.max_points, min_points=opts.min_points)
    fallback = parsed.fallback
    call = CallTrace.from_result(result, node="skeleton", agent=AGENT, points=len(parsed.points), **opts.trace_extra())
    write(SkeletonDone(run_id, points=parsed.points, text=raw, fallback=fallback, call=call))
    if fallback:
        log.info("run %s falls back to normal decoding: %s", run_id, fallback)
    return {
        "skeleton": raw,
        "points": parsed.points if fallback is None else [],
        "fallback": fallback,
        "calls": [call],
        "stages": {"skeleton": time.perf_counter() - t0},
    }


def after_skeleton(state: State) -> list[Send] | str:
    """One ``Send`` per point, or normal decoding when the skeleton was not usable."""
    if state.get("fallback"):
        return "normal"
    points = state["points"]
    return [
        Send("expand", Branch(run_id=state["run_id"], question=state["question"], points=points, index=i))
        for i in range(1, len(points) + 1)
    ]


async def expand_node(branch: Branch, runtime: Runtime[Context]) -> dict[str, Any]:
    """Expand one point. A failure is marked on the point and reported, not raised (unless asked)."""
    write = get_stream_writer()
    backend, opts = runtime.context.backend, runtime.context.options
    run_id, index, points = branch["run_id"], branch["index"], branch["points"]
    point = points[index - 1]
    started = time.time()
    messages, prefill = prompts.render(
        POINT_PROMPT,
        question=opts.prompt_question(branch["question"]),
        skeleton=_skeleton_listing(points),
        index=index,
        point=point,
    )
    request = GenerationRequest(
        messages=messages,
        prefill=prefill,
        max_tokens=opts.point_tokens(len(points)),
        temperature=opts.temperature,
        repetition_penalty=opts.repetition_penalty,
        stop=["\n\n", *(f"\n{j}." for j in range(1, len(points) + 2) if j != index)],
        tag=f"{run_id}/expand/{index}",
    )
    try:
        async with asyncio.timeout(opts.branch_timeout_s):
            result = await _generate(backend, request, lambda text: write(BranchDelta(run_id, index=index, text=text)))
    except Exception as exc:  # CancelledError is not an Exception: Ctrl-C still cancels every branch
        message = f"timed out after {opts.branch_timeout_s} s" if isinstance(exc, TimeoutError) else (str(exc) or type(exc).__name__)
        log.warning("run %s: point %d failed: %s", run_id, index, message)
        write(ErrorEvent(run_id, node="expand", message=message, branch=index))
        write(BranchDone(run_id, index=index, point=point, text="", call=None, error=message))
        if opts.fail_on_branch_error:
            raise ControllerError(f"point {index} ({point!r}) failed: {message}") from exc
        expansion = Expansion(index, point, "", message, started, time.time())
        return {"expansions": [expansion]}
    text = strip_echo(result.text, index, points)
    if result.finish_reason == "length":
        text = _trim_partial_sentence(text)
    call = CallTrace.from_result(result, node="expand", branch=index, agent=AGENT, **opts.trace_extra())
    write(BranchDone(run_id, index=index, point=point, text=text, call=call))
    return {"expansions": [Expansion(index, point, text, None, started, time.time())], "calls": [call]}


async def join_node(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Join the expansions in point order; fail only when every point failed."""
    write = get_stream_writer()
    t0 = time.perf_counter()
    run_id, points = state["run_id"], state["points"]
    expansions = {e.index: e for e in state.get("expansions", [])}
    failed = {i: e.error for i, e in expansions.items() if e.error}
    if failed and len(failed) == len(points):
        message = f"all {len(points)} point expansions failed; first error: {failed[min(failed)]}"
        write(ErrorEvent(run_id, node="join", message=message))
        raise ControllerError(message)
    answer = join_points(points, {i: e.text for i, e in expansions.items()}, failed)  # type: ignore[arg-type]
    spans = list(expansions.values())
    expand_s = max(e.ended for e in spans) - min(e.started for e in spans) if spans else 0.0
    write(AnswerDone(run_id, answer=answer, mode=SOT, points=points))
    return {"answer": answer, "stages": {"expand": expand_s, "join": time.perf_counter() - t0}}


async def normal_node(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Plain decoding of the question itself: the baseline a user gets without vivace."""
    write = get_stream_writer()
    backend, opts = runtime.context.backend, runtime.context.options
    run_id = state["run_id"]
    t0 = time.perf_counter()
    request = GenerationRequest(
        messages=[{"role": "user", "content": opts.prompt_question(state["question"])}],
        max_tokens=opts.max_tokens,
        temperature=opts.temperature,
        repetition_penalty=opts.repetition_penalty,  # greedy decoding of the small model loops without it
        tag=f"{run_id}/normal",
    )
    try:
        result = await _generate(backend, request, lambda text: write(AnswerDelta(run_id, text=text)))
    except Exception as exc:
        write(ErrorEvent(run_id, node="normal", message=str(exc) or type(exc).__name__))
        raise
    call = CallTrace.from_result(result, node="normal", agent=AGENT, **opts.trace_extra())
    answer = result.text.strip()
    write(AnswerDone(run_id, answer=answer, mode=NORMAL, points=[], call=call))
    return {"answer": answer, "calls": [call], "stages": {"normal": time.perf_counter() - t0}}


def build_graph() -> StateGraph:
    """The uncompiled controller graph, for embedding as a subgraph or extending."""
    graph = StateGraph(State, context_schema=Context)
    graph.add_node("route", route_node)
    graph.add_node("skeleton", skeleton_node)
    graph.add_node("expand", expand_node, input_schema=Branch)  # type: ignore[arg-type]
    graph.add_node("join", join_node)
    graph.add_node("normal", normal_node)
    graph.add_edge(START, "route")
    graph.add_conditional_edges("route", after_route, ["skeleton", "normal"])
    graph.add_conditional_edges("skeleton", after_skeleton, ["expand", "normal"])
    graph.add_edge("expand", "join")
    graph.add_edge("join", END)
    graph.add_edge("normal", END)
    return graph


_COMPILED: Any = None


def controller() -> Any:
    """The compiled controller, built once per process (compiling costs more than a run)."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = build_graph().compile(name="vivace-sot")
    return _COMPILED


def initial_state(question: str, run_id: str) -> State:
    return State(run_id=run_id, question=question, expansions=[], calls=[], stages={})

