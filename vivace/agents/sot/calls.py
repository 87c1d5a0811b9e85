"""The SoT controller's model calls: the skeleton, one point's expansion, and plain (normal) decoding.

Why its own module, below the controller (``vivace.agents.sot.controller``) and its
points stage (``vivace.agents.sot.points``): both stages make these calls (the
points stage falls back to normal decoding itself when the skeleton is
unusable), and an agent's long-form answer runs the same points stage, so the
calls sit where every one of them can import them without importing the
controller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import lru_cache
from typing import Any

from langgraph.runtime import Runtime

from vivace.agents import guard
from vivace.agents.events import AnswerDelta, AnswerDone, BranchDelta, BranchDone, ErrorEvent, SkeletonDone
from vivace.agents.journal import digest
from vivace.agents.sot.length_plan import record_normal
from vivace.agents.sot.router import NORMAL, SOT
from vivace.agents.sot.skeleton import MIN_POINTS, Skeleton, parse_skeleton, strip_echo, trim_partial_sentence
from vivace.agents.sot.options import GUARD_REFUSAL
from vivace.agents.sot.state import Context, Expansion, State
from vivace.errors import RunError
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
