"""The one route decision: whether a question is expanded by SoT, and why.

Why one function: the SoT controller's entry (``vivace.agents.sot.controller``) and a
writer's long-form answer (``vivace.agents.sot.long_form``) used to decide each on
their own, and drifted (the safety guard was checked in one only). Both now
ask here: the user's mode, else the router on the question alone; the safety
guard; the length plan (``vivace.agents.sot.length_plan``: how many points, and in
``auto`` a question whose like were answered short stays normal); then, in
``auto``, the engine's load (``vivace.agents.sot.load``), which may cap the
points or keep the call normal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from vivace.agents import guard
from vivace.agents.sot.router import NORMAL, SOT, aroute
from vivace.agents.sot.options import SotOptions

if TYPE_CHECKING:
    from vivace.agents.base import AgentContext
    from vivace.agents.sot.length_plan import LengthPlan
    from vivace.runtime.load import Claim


@dataclass
class Route:
    """The decision, the SoT options it leaves (points capped), and what it holds: the plan and the batch slots."""

    mode: str
    reason: str
    options: SotOptions
    plan: "LengthPlan | None" = None
    load: dict[str, Any] | None = None  # the load an ``auto`` decision saw
    claim: "Claim | None" = None  # batch slots the load-aware decision claimed, released as calls start
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        """What a step run keeps of it (``extra["long_form"]``)."""
        out: dict[str, Any] = {}
        if self.plan is not None:
            out["length_plan"] = self.plan.as_dict()
        if self.load is not None:
            out["load"] = self.load
        return {**out, "mode": self.mode, "reason": self.reason, "seconds": round(self.seconds, 6)}


async def decide(agent: "AgentContext", question: str, opts: SotOptions, *, plan_kind: str = "") -> Route:
    """Route ``question`` as ``opts.mode`` asks (sot, normal, or auto); ``plan_kind`` names its length history."""
    from vivace.agents.sot.length_plan import plan_for
    from vivace.agents.sot.load import route_under_load

    t0 = time.perf_counter()
    auto = opts.mode not in (SOT, NORMAL)
    plan = load = held = None
    if not auto:
        mode, reason = opts.mode, f"requested with --mode {opts.mode}"
    else:
        # A cue decides inline; embedding (and, the first time, loading the embedder) runs in
        # daemon threads, off the event loop that also serves the engine's output handler,
        # and a cancelled run does not wait for them.
        mode, reason = await aroute(question)
        if mode == SOT and opts.safety_guard and SOT in opts.guarded and (topic := guard.sensitive(question)):
            mode, reason = NORMAL, f"guard: sensitive request ({topic!r}) and SoT is guarded (was: {reason})"
    if mode == SOT and opts.length_plan:
        plan = await plan_for(agent, question, opts.max_tokens, opts.min_points, opts.max_points, kind=plan_kind)
        opts = replace(opts, max_points=min(opts.max_points, plan.points), min_points=min(opts.min_points, plan.points))
        if auto and plan.too_short():
            mode, reason = NORMAL, f"length plan: {plan.why_short()} (was: {reason})"
    if auto and opts.load_aware:
        mode, reason, points, load, held = route_under_load(
            agent.runtime, mode, reason, opts.max_points, opts.min_points, opts.point_tokens(opts.max_points))
        opts = replace(opts, max_points=points)
    return Route(mode, reason, opts, plan, load, held, time.perf_counter() - t0)
