"""SoT's skeleton, its points and their join as one stage of the controller, plain or pipelined.

Why one stage: a LangGraph ``Send`` per point and a join superstep cost about
0.14 ms per point and two supersteps per run in LangGraph alone (``vivace
bench overhead``), and they bought nothing: the points are concurrent asyncio
tasks either way, which the backend batches. The controller graph keeps the
decision (the route on its entry edge); this stage is the fan-out, and it
falls back to normal decoding itself when the skeleton is unusable.
SoT inside an agent's long-form call (``vivace.agents.sot.long_form``) runs the
same function.

Pipelined (``SotOptions.pipelined``): a point goes out the moment the skeleton
line that names it ends, while the skeleton goes on; the skeleton's time that
overlaps expansions is the stage ``skeleton_hidden``. An early point sees the
skeleton so far (its own line and those before it), which keeps the prompts'
shared part first for the prefix cache; points that start with the skeleton
done see all of it. Parsing complete lines only keeps it safe: a complete line
never changes, so the points launched early are the start of the final list.
If the finished skeleton is unusable, the early points are cancelled and the
run falls back to normal decoding, as plain SoT does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from langgraph.runtime import Runtime

from vivace.agents.events import AnswerDone, ErrorEvent, SkeletonDelta
from vivace.agents.sot.router import SOT
from vivace.agents.sot.skeleton import Skeleton, join_points, parse_skeleton
from vivace.agents.sot.calls import (
    expand_point,
    guard_answer,
    normal_node,
    skeleton_call,
    skeleton_done,
    skeleton_listing,
)
from vivace.agents.sot.options import GUARD_REFUSAL
from vivace.agents.sot.state import Context, Expansion, State
from vivace.errors import RunError

log = logging.getLogger(__name__)


@dataclass
class Points:
    """What the stage produced: the raw and parsed skeleton, each point's expansion, the stage times."""

    raw: str
    skeleton: Skeleton
    expansions: list[Expansion] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> dict[int, str]:
        return {e.index: e.error for e in self.expansions if e.error}

    def answer(self) -> str:
        """The expansions joined in point order, failed points marked."""
        return join_points(self.skeleton.points, {e.index: e.text for e in self.expansions}, self.failed)


async def skeleton_and_points(ctx: Context, run_id: str, question: str, *, point_question: str | None = None,
                              stream_skeleton: bool = True) -> Points:
    """Decode the skeleton, then expand every point at once (``SotOptions.pipelined``: each as its line ends).

    ``point_question`` is what the points expand (default ``question``): an
    agent plans its skeleton from the task alone and expands with its notes.
    An unusable skeleton comes back with its ``fallback`` set and no expansions.
    """
    write, pipelined = ctx.emit, ctx.options.pipelined
    t0 = time.perf_counter()
    call, prefill = skeleton_call(ctx, question)
    ctx.release()  # the skeleton's request takes the first of the claimed slots
    target = point_question or question
    text = prefill or ""
    launched: list[str] = []
    tasks: list[asyncio.Task[Expansion]] = []
    loop = asyncio.get_running_loop()

    def launch(points: list[str], total: int | None) -> None:
        if len(points) <= len(launched):
            return
        points, listing = list(points), skeleton_listing(points)  # one prompt listing for the points starting now
        for index in range(len(launched) + 1, len(points) + 1):
            launched.append(points[index - 1])
            tasks.append(loop.create_task(expand_point(ctx, run_id, target, points, index, total, listing)))

    def on_text(piece: str) -> None:
        nonlocal text
        if stream_skeleton:
            write(SkeletonDelta(run_id, text=piece))
        if pipelined:
            text += piece
            if "\n" in piece:  # a line is complete: its point (and those before it) can go
                launch(parse_skeleton(text[: text.rfind("\n")], max_points=ctx.options.max_points, min_points=1).points, None)

    saved = await ctx.restore("skeleton")
    if prefill and stream_skeleton and saved is None:
        write(SkeletonDelta(run_id, text=prefill))
    try:
        if saved is not None:  # a resumed run: the skeleton was decoded before it stopped
            raw, trace = saved["raw"], None
            if stream_skeleton:
                write(SkeletonDelta(run_id, text=raw))
        else:
            try:
                result, trace = await ctx.send(call, on_text)
            except Exception as exc:
                write(ErrorEvent(run_id, node="skeleton", message=str(exc) or type(exc).__name__))
                raise
            raw = (prefill or "") + result.text
            await ctx.keep("skeleton", {"raw": raw})
        skeleton_end = time.time()
        parsed = skeleton_done(ctx, run_id, raw, trace)
        out = Points(raw, parsed, stages={"skeleton": time.perf_counter() - t0})
        if parsed.fallback is not None or parsed.points[: len(launched)] != launched:
            if parsed.fallback is None:  # complete lines never change; should this ever differ, start over
                log.warning("run %s: the early points are not the skeleton's; expanding them again", run_id)
            await _cancel(tasks)
            tasks.clear()
            launched.clear()
            if parsed.fallback is not None:  # unusable, or refused and stopped by the guard
                return out
        early = len(tasks)
        launch(parsed.points, len(parsed.points))
        out.expansions = list(await asyncio.gather(*tasks))
    finally:
        await _cancel(tasks)
    spans = out.expansions
    out.stages["expand"] = max(e.ended for e in spans) - min(e.started for e in spans) if spans else 0.0
    if pipelined:
        first_start = min((e.started for e in spans[:early]), default=skeleton_end)
        out.stages["skeleton_hidden"] = max(0.0, skeleton_end - first_start)
    return out


async def _cancel(tasks: list[asyncio.Task[Expansion]]) -> None:
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def points_node(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """The controller's SoT stage: skeleton, points, and the answer joined in point order.

    It fails only when every point failed. An unusable skeleton hands the run
    to normal decoding (``normal_node``) within this stage: a conditional edge
    after it cost every SoT run about 0.07 ms in LangGraph for this rare turn
    (``vivace bench overhead``). A skeleton the guard stopped is the answer.
    """
    ctx = runtime.context
    run_id = state["run_id"]
    out = await skeleton_and_points(ctx, run_id, state["question"])
    parsed = out.skeleton
    if parsed.fallback is not None:
        update = {"skeleton": out.raw, "points": [], "fallback": parsed.fallback, **guard_answer(parsed)}
        if parsed.fallback == GUARD_REFUSAL:
            return {**update, "stages": out.stages}
        normal = await normal_node(state, runtime)
        return {**update, **normal, "stages": {**out.stages, **normal["stages"]}}
    t0 = time.perf_counter()
    failed = out.failed
    if failed and len(failed) == len(parsed.points):
        message = f"all {len(parsed.points)} point expansions failed; first error: {failed[min(failed)]}"
        ctx.emit(ErrorEvent(run_id, node="join", message=message))
        raise RunError(message, ctx.name, ctx.step)
    answer = out.answer()
    ctx.emit(AnswerDone(run_id, answer=answer, mode=SOT, points=parsed.points))
    return {"skeleton": out.raw, "points": parsed.points, "fallback": None, "answer": answer,
            "stages": {**out.stages, "join": time.perf_counter() - t0}}
