"""Load-aware fan-out: SoT's points go only into batch slots the engine has free.

Why: SoT buys latency by decoding its points side by side, which is nearly
free while the engine's batch has room (decoding is bandwidth-bound) and buys
nothing once it is full: then its extra requests only queue behind, or slow,
everyone else's, and the skeleton call is pure overhead. Measured with
``vivace bench load``: 16 concurrent tasks ran at 85 tasks/min normal and
28.7 with SoT. So, in ``auto``, a question the router sends to SoT keeps SoT
only with at least ``min_points`` slots to fan out into, and its point count
(the fan-out width) is capped at them; otherwise it is decoded normally.
The slots are the runtime's (``vivace.runtime.load``): the batch holds
``min(max_in_flight, max_num_seqs, knee)`` requests, the knee being the batch
size at which the engine's own decode steps take twice a lone sequence's (a
GPU's is in the hundreds, two CPU cores' a handful); a run may use what is free of
it (minus requests in flight, queued, and claimed by runs that decided a
moment ago, and no more than the free KV cache holds) and no more than its
share of it (the batch divided among the runs using it): one run alone fans
out fully (on an idle batch the knee does not cap it: see ``Load.free_alone``),
sixteen at once into 32 slots get two points each, and past
``capacity / min_points`` runs every run decodes normally.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from vivace.agents.sot.router import NORMAL, SOT
from vivace.runtime.load import Claim, Load, ledger_of, read_load

log = logging.getLogger(__name__)

__all__ = ["FanOut", "decide", "fan_out"]


@dataclass(frozen=True)
class FanOut:
    """The load-aware decision: the mode, the point cap, why, and the load it saw."""

    mode: str
    max_points: int
    reason: str | None  # None: the load changed nothing
    load: Load

    def record(self) -> dict[str, Any]:
        """What the run's trace keeps under ``router.load``."""
        return {"decision": self.mode, "max_points": self.max_points if self.mode == SOT else 0,
                "changed": self.reason is not None, **self.load.to_dict()}


def decide(load: Load, max_points: int, min_points: int) -> FanOut:
    """SoT with as many points as the free slots and the run's share allow; normal decoding below ``min_points``."""
    width = load.free_alone if load.idle else min(load.free, load.share)
    seen = f"{load.busy} of {load.capacity} batch slots busy, {load.free} free, {load.runs} run(s) sharing them"
    if width >= max_points:
        return FanOut(SOT, max_points, None, load)
    if width >= max(min_points, 1):
        return FanOut(SOT, width, f"load: {seen}; points capped at {width}", load)
    return FanOut(NORMAL, 0, f"load: {seen}; {width} slot(s) for this run, SoT needs {min_points}", load)


def fan_out(runtime: Any, max_points: int, min_points: int, request_tokens: int) -> tuple[FanOut, Claim | None]:
    """Read the runtime's load, decide, and claim the slots the decision will use.

    The claim (the points for SoT, whose first slot the skeleton uses; one
    request for normal) counts as busy for runs deciding before this one's
    requests reach the limiter; the controller releases it as they start.
    """
    limiter = getattr(runtime, "limiter", None)
    decision = decide(read_load(limiter, getattr(runtime, "backend", None), request_tokens), max_points, min_points)
    ledger = ledger_of(limiter)
    claim = ledger.claim(decision.max_points if decision.mode == SOT else 1) if ledger else None
    log.debug("fan-out: %s, %d points (%s)", decision.mode, decision.max_points, decision.reason or "load allows it")
    return decision, claim


def claim(runtime: Any, slots: int) -> Claim | None:
    """Claim ``slots`` on the runtime's ledger without deciding (a run the router sent to normal decoding)."""
    ledger = ledger_of(getattr(runtime, "limiter", None))
    return ledger.claim(slots) if ledger else None


def route_under_load(runtime: Any, mode: str, reason: str, max_points: int, min_points: int,
                     request_tokens: int) -> tuple[str, str, int, dict[str, Any] | None, Claim | None]:
    """The router's ``mode``/``reason`` after the load had its say: mode, reason, point cap, the record, the claim."""
    if mode != SOT:
        return mode, reason, max_points, None, claim(runtime, 1)
    decision, held = fan_out(runtime, max_points, min_points, request_tokens)
    if decision.reason is None:
        return mode, reason, max_points, decision.record(), held
    return decision.mode, f"{decision.reason} (router: {reason})", decision.max_points or max_points, decision.record(), held
