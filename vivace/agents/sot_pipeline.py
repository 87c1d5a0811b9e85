"""Pipelined SoT: each point starts expanding as soon as its skeleton line is complete.

Why: in plain SoT the points wait for the whole skeleton, so its decoding
time is added to every answer. Here a point goes out the moment the line
that names it ends, while the skeleton goes on; the skeleton's time that
overlaps expansions is recorded as the stage ``skeleton_hidden``. An early
point sees the skeleton so far (its own line and those before it), which
keeps the prompts' shared part first for the prefix cache; points that
finish with the skeleton see all of it. Its budget is a 3-point answer's
until the point count is known (``expand_point``).

Parsing complete lines only keeps it safe: a complete line never changes, so
the points launched early are the start of the final list. If the finished
skeleton is unusable, the early points are cancelled and the run falls back
to normal decoding, as plain SoT does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from langgraph.graph import END
from langgraph.runtime import Runtime

from vivace.agents.events import ErrorEvent, SkeletonDelta
from vivace.agents.skeleton import parse_skeleton
from vivace.agents.sot import (
    GUARD_REFUSAL,
    Context,
    Expansion,
    State,
    expand_point,
    guard_answer,
    skeleton_call,
    skeleton_done,
)

log = logging.getLogger(__name__)


async def pipelined_node(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx = runtime.context
    write, opts = ctx.emit, ctx.options
    run_id, question = state["run_id"], state["question"]
    t0 = time.perf_counter()
    call, prefill = skeleton_call(ctx, question)
    ctx.release()  # the skeleton's request takes the first of the claimed slots
    text = prefill or ""
    launched: list[str] = []
    tasks: list[asyncio.Task[Expansion]] = []
    loop = asyncio.get_running_loop()

    def launch(points: list[str], total: int | None) -> None:
        for index in range(len(launched) + 1, len(points) + 1):
            launched.append(points[index - 1])
            tasks.append(loop.create_task(expand_point(ctx, run_id, question, list(points), index, total)))

    def on_text(piece: str) -> None:
        nonlocal text
        write(SkeletonDelta(run_id, text=piece))
        text += piece
        if "\n" in piece:  # a line is complete: its point (and those before it) can go
            launch(parse_skeleton(text[: text.rfind("\n")], max_points=opts.max_points, min_points=1).points, None)

    if prefill:
        write(SkeletonDelta(run_id, text=prefill))
    try:
        try:
            result, trace = await ctx.send(call, on_text)
        except Exception as exc:
            write(ErrorEvent(run_id, node="skeleton", message=str(exc) or type(exc).__name__))
            raise
        skeleton_end = time.time()
        raw = (prefill or "") + result.text
        parsed = skeleton_done(ctx, run_id, raw, trace)
        stages = {"skeleton": time.perf_counter() - t0}
        if parsed.fallback is not None or parsed.points[: len(launched)] != launched:
            if parsed.fallback is None:  # complete lines never change; should this ever differ, start over
                log.warning("run %s: the early points are not the skeleton's; expanding them again", run_id)
            await _cancel(tasks)
            tasks.clear()
            launched.clear()
            if parsed.fallback is not None:  # unusable, or refused and stopped by the guard
                return {"skeleton": raw, "points": [], "fallback": parsed.fallback, "stages": stages,
                        **guard_answer(parsed)}
        early = len(tasks)
        launch(parsed.points, len(parsed.points))
        expansions = list(await asyncio.gather(*tasks))
    finally:
        await _cancel(tasks)
    first_start = min((e.started for e in expansions[:early]), default=skeleton_end)
    stages["skeleton_hidden"] = max(0.0, skeleton_end - first_start)
    return {"skeleton": raw, "points": parsed.points, "fallback": None, "expansions": expansions, "stages": stages}


async def _cancel(tasks: list[asyncio.Task[Expansion]]) -> None:
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def after_pipelined(state: State) -> str:
    if state.get("fallback") == GUARD_REFUSAL:
        return END
    return "normal" if state.get("fallback") else "join"
