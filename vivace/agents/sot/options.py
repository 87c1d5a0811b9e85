"""How one SoT run decodes: its options, from the config with the run's options on top.

Why its own module: the controller (``vivace.agents.sot.controller``) is its graph and
nodes; what a run may set, and the budgets derived from it, is read by the
controller, its points stage and the benches alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from vivace.agents import guard
from vivace.agents.base import AgentContext
from vivace.agents.sot.router import MODES
from vivace.agents.sot.skeleton import MIN_POINTS
from vivace.errors import InputError

# Per-point token bounds: long enough for 2-4 sentences, short enough that the
# slowest branch does not erase the parallel gain.
POINT_TOKENS_MIN, POINT_TOKENS_MAX = 40, 96
SKELETON_TOKENS_PER_POINT = 12
T = TypeVar("T")
GUARD_REFUSAL = "guard: the skeleton is a refusal; its points are not expanded"


@dataclass(frozen=True)
class SotOptions:
    """How one SoT step decodes, resolved once: the run's ``RunOptions`` over the config.

    ``None`` budgets are derived from ``max_tokens`` and the point count.
    """

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
    pipelined: bool = False  # vivace.agents.sot.points: points start while the skeleton is decoded
    length_plan: bool = True  # vivace.agents.sot.length_plan: points and their budgets from the expected normal length
    load_aware: bool = True  # auto only: vivace.agents.sot.load caps the fan-out at the free batch slots
    # The safety guard (on by default in auto): techniques ``auto`` must not pick for a sensitive request,
    # and a refused skeleton is answered as the refusal it is instead of being expanded.
    safety_guard: bool = False
    guarded: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.max_points < 1 or self.max_tokens < 1:
            raise InputError("max_points and max_tokens must be at least 1")

    @classmethod
    def for_run(cls, ctx: AgentContext) -> "SotOptions":
        """The config's settings, with the run's options (``mode``, budgets, timeouts) on top."""
        o, c = ctx.options, ctx.config

        def pick(value: T | None, default: T) -> T:
            return default if value is None else value

        mode = pick(o.mode, c.mode)
        on = pick(o.safety_guard, mode == "auto")
        return cls(
            mode=mode,
            safety_guard=on,
            guarded=pick(o.guarded, guard.guarded_techniques(c.home) if on else ()) if on else (),
            max_tokens=pick(o.max_tokens, c.max_tokens),
            temperature=pick(o.temperature, c.temperature),
            repetition_penalty=pick(o.repetition_penalty, c.repetition_penalty),
            max_points=pick(o.max_points, c.sot_max_points),
            min_points=pick(o.min_points, MIN_POINTS),
            point_max_tokens=o.point_max_tokens,
            skeleton_max_tokens=o.skeleton_max_tokens,
            branch_timeout_s=o.branch_timeout_s,
            fail_on_branch_error=o.fail_on_branch_error,
            pipelined=pick(o.pipelined, c.sot_pipelined),
            load_aware=pick(o.load_aware, c.sot_load_aware),
            length_plan=pick(o.length_plan, c.sot_length_plan),
        )

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
