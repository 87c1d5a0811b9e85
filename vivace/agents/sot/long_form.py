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
from typing import TYPE_CHECKING, Any

from vivace.agents.base import AgentContext, current_step
from vivace.agents.sot.options import SotOptions
from vivace.agents.sot.route import decide

if TYPE_CHECKING:
    from vivace.agents.sot.state import Context

log = logging.getLogger(__name__)


def setting(ctx: AgentContext) -> str:
    """The run's long_form, else the config's (both checked where they are read: ``RunOptions``, ``Config``)."""
    return str(ctx.options.long_form or ctx.config.long_form)


def _kind() -> str:
    """The length history this call's answers go to: its agent's (``vivace.agents.sot.length_plan.LengthHistory.of``)."""
    run = current_step()
    return f"agent-{run.agent}" if run is not None and run.agent else "agent"


def record_answer(ctx: AgentContext, task: str, result: Any) -> None:
    """The agent's own answer to ``task``, decoded normally: a whole one plans the SoT expansions of tasks like it.

    Why: a writer's answer is as long as its prompt makes it, not as an ``ask``
    answer to the same words; without its own history the plan falls back to
    its prior and can expand a short answer into a long one.
    """
    from vivace.agents.sot.length_plan import record_normal

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
    from vivace.agents.sot.state import Context

    chosen = setting(ctx)
    sub = AgentContext(ctx.runtime, ctx.tracer, ctx.scope, ctx.options.replace(mode="normal" if chosen == "off" else chosen))
    if chosen == "off":
        decision: dict[str, Any] = {"mode": "normal", "reason": "long_form is off", "seconds": 0.0}
        held = route = None
    else:
        route = await decide(sub, task, SotOptions.for_run(sub), plan_kind=_kind())
        decision, held = route.record(), route.claim
    run = current_step()
    if run is not None:
        run.extra["long_form"] = decision
    if route is None or route.mode != "sot":
        if held is not None:
            held.close()  # the agent's own call follows at once
        return None
    step, name = (run.step, run.agent) if run else ("long_form", "long_form")
    sot = Context(sub, route.options, ctx.tracer.emit, step, name, claim=held, plan=route.plan)
    try:
        return await _expand(sot, ctx.tracer.run_id, task, notes, decision)
    finally:
        if held is not None:
            held.close()


async def _expand(sot: "Context", run_id: str, task: str, notes: str, decision: dict[str, Any]) -> str | None:
    from vivace.agents.sot.points import skeleton_and_points

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
