"""SoT inside an agent: an agent's long-form answer expanded by Skeleton-of-Thought when the router says it pays.

Why per call: the writer of a pipeline decodes the run's longest answer one
token at a time, the slowest part of the critical path; whether SoT pays
depends on what the task asks (a list of considerations does, a letter or a
calculation does not), so the router decides for that call, on the task, and
the decision is recorded on the step run (``extra["long_form"]``) the way
the context decision is recorded on each call. ``long_form`` is a run
option (and config key): ``off`` (default), ``auto`` (the router decides) or
``sot`` (always). The notes the agent was handed go into the question, so
the skeleton and every point see them, in the shared prefix.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from vivace.agents import guard
from vivace.agents.base import AgentContext, StepInput, current_step
from vivace.errors import InputError

log = logging.getLogger(__name__)

SETTINGS = ("off", "auto", "sot")


def setting(ctx: AgentContext) -> str:
    value = ctx.options.get("long_form") or getattr(ctx.config, "long_form", "off")
    if value not in SETTINGS:
        raise InputError(f"long_form must be one of {', '.join(SETTINGS)}, got {value!r}")
    return str(value)


async def decide(ctx: AgentContext, task: str) -> dict[str, Any]:
    """Whether this call is expanded by SoT, and why (cues and the router's classifier, on the task alone)."""
    from vivace.agents.router import aroute

    chosen = setting(ctx)
    t0 = time.perf_counter()
    if chosen == "off":
        mode, reason = "normal", "long_form is off"
    elif chosen == "sot":
        mode, reason = "sot", "long_form = sot"
    else:
        mode, reason = await aroute(task)
        if mode == "sot" and (topic := guard.sensitive(task)):
            mode, reason = "normal", f"guard: sensitive request ({topic!r}) (was: {reason})"
    return {"mode": mode, "reason": reason, "seconds": round(time.perf_counter() - t0, 6)}


async def sot_answer(ctx: AgentContext, task: str, notes: str) -> str | None:
    """The answer through SoT when the decision says so, else None (the agent makes its normal call).

    The decision is recorded on the current step run either way.
    """
    from vivace.agents.sot import SotAgent

    decision = await decide(ctx, task)
    run = current_step()
    if run is not None:
        run.extra["long_form"] = decision
    if decision["mode"] != "sot":
        return None
    question = f"{task}\n\nUse these notes:\n{notes}" if notes.strip() else task
    sub = AgentContext(ctx.runtime, ctx.tracer, ctx.scope, {**ctx.options, "mode": "sot"})
    node = SotAgent().build(sub)
    text = await node(StepInput(task=question))
    if run is not None:
        run.extra["long_form"]["points"] = len(ctx.tracer.meta.get("points") or [])
    return text.strip() or None
