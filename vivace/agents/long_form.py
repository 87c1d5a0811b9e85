"""SoT inside an agent: an agent's long-form answer expanded by Skeleton-of-Thought when the router says it pays.

Why per call: the writer of a pipeline decodes the run's longest answer one
token at a time, the slowest part of the critical path; whether SoT pays
depends on what the task asks (a list of considerations does, a letter or a
calculation does not), so the router decides for that call, on the task, and
the decision is recorded on the step run (``extra["long_form"]``) the way
the context decision is recorded on each call. ``long_form`` is a run
option (and config key): ``off`` (default), ``auto`` (the router decides, and
the engine's load may keep the call normal or cap its points) or ``sot``
(always). The skeleton is planned from the task, and its length plan sets
the point count and each point's budget as in a SoT run; the notes the agent
was handed go into every point's question, in the prefix the points share.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vivace.agents import guard
from vivace.agents.base import AgentContext, current_step
from vivace.agents.sot_options import SotOptions
from vivace.choices import LongForm, values
from vivace.errors import InputError

if TYPE_CHECKING:
    from vivace.agents.sot_state import Context

log = logging.getLogger(__name__)

SETTINGS = values(LongForm)


def setting(ctx: AgentContext) -> str:
    value = ctx.options.long_form or getattr(ctx.config, "long_form", "off")
    if value not in SETTINGS:
        raise InputError(f"long_form must be one of {', '.join(SETTINGS)}, got {value!r}")
    return str(value)


async def decide(ctx: AgentContext, task: str, opts: "SotOptions") -> tuple[dict[str, Any], "SotOptions", Any, Any]:
    """Whether this call is expanded by SoT, and why: the router on the task alone, the length plan
    (``vivace.agents.length_plan``: how many points, each point's budget; in ``auto`` a task whose like
    were answered short stays normal), then (in ``auto``) the engine's load (``vivace.agents.sot_load``),
    which may cap the points or keep the call normal.

    Returns the decision record, the SoT options (points capped), the batch slots claimed and the plan.
    """
    from vivace.agents.length_plan import plan_for
    from vivace.agents.router import aroute
    from vivace.agents.sot_load import route_under_load

    chosen = setting(ctx)
    t0 = time.perf_counter()
    held = plan = None
    record: dict[str, Any] = {}
    if chosen == "off":
        mode, reason = "normal", "long_form is off"
    else:
        mode, reason = ("sot", "long_form = sot") if chosen == "sot" else await aroute(task)
        if chosen == "auto" and mode == "sot" and (topic := guard.sensitive(task)):
            mode, reason = "normal", f"guard: sensitive request ({topic!r}) (was: {reason})"
        if mode == "sot" and opts.length_plan:
            plan = await plan_for(ctx, task, opts.max_tokens, opts.min_points, opts.max_points, kind=_kind())
            opts = replace(opts, max_points=min(opts.max_points, plan.points),
                           min_points=min(opts.min_points, plan.points))
            record["length_plan"] = plan.as_dict()
            if chosen == "auto" and plan.too_short():
                mode, reason = "normal", f"length plan: {plan.why_short()} (was: {reason})"
        if chosen == "auto" and mode == "sot" and opts.load_aware:
            mode, reason, points, load, held = route_under_load(
                ctx.runtime, mode, reason, opts.max_points, opts.min_points, opts.point_tokens(opts.max_points))
            opts = replace(opts, max_points=points)
            if load is not None:
                record["load"] = load
    record.update(mode=mode, reason=reason, seconds=round(time.perf_counter() - t0, 6))
    return record, opts, held, plan


def _kind() -> str:
    """The length history this call's answers go to: its agent's (``vivace.agents.length_plan.LengthHistory.of``)."""
    run = current_step()
    return f"agent-{run.agent}" if run is not None and run.agent else "agent"


def record_answer(ctx: AgentContext, task: str, result: Any) -> None:
    """The agent's own answer to ``task``, decoded normally: a whole one plans the SoT expansions of tasks like it.

    Why: a writer's answer is as long as its prompt makes it, not as an ``ask``
    answer to the same words; without its own history the plan falls back to
    its prior and can expand a short answer into a long one.
    """
    from vivace.agents.length_plan import record_normal

    if getattr(result, "finish_reason", None) == "stop":
        record_normal(ctx, task, int(getattr(result, "output_tokens", 0) or 0), kind=_kind())


async def sot_answer(ctx: AgentContext, task: str, notes: str) -> str | None:
    """The answer through SoT when the decision says so, else None (the agent makes its own call).

    The skeleton is planned from the task alone (the notes would crowd its
    short list); each point is expanded with the notes in the question, so
    they sit in the prefix the points share. A skeleton too short to expand
    costs its few tokens and the agent answers as it would have. The
    decision is recorded on the current step run either way.
    """
    from vivace.agents.sot_state import Context

    sub = AgentContext(ctx.runtime, ctx.tracer, ctx.scope, ctx.options.replace(mode="sot"))
    decision, opts, held, plan = await decide(ctx, task, SotOptions.for_run(sub))
    run = current_step()
    if run is not None:
        run.extra["long_form"] = decision
    if decision["mode"] != "sot":
        if held is not None:
            held.close()  # the agent's own call follows at once
        return None
    step, name = (run.step, run.agent) if run else ("long_form", "long_form")
    sot = Context(sub, opts, ctx.tracer.emit, step, name, claim=held, plan=plan)
    try:
        return await _expand(sot, ctx.tracer.run_id, task, notes, decision)
    finally:
        if held is not None:
            held.close()


async def _expand(sot: "Context", run_id: str, task: str, notes: str, decision: dict[str, Any]) -> str | None:
    from vivace.agents.sot_points import skeleton_and_points

    question = f"{task}\n\nUse these notes:\n{notes}" if notes.strip() else task
    out = await skeleton_and_points(sot, run_id, task, point_question=question, stream_skeleton=False)
    decision["points"] = len(out.skeleton.points) if out.skeleton.fallback is None else 0
    if out.skeleton.fallback is not None:
        decision["fallback"] = out.skeleton.fallback
        return None
    if len(out.failed) == len(out.skeleton.points):
        decision["fallback"] = "every point failed"
        return None
    return out.answer().strip() or None
