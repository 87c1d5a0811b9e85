"""Which waiting request goes first: a priority from the call's place in its program.

Why here: the engine serves a batch at a time, and when requests wait (for the
in-flight limiter, or in the engine's queue) first come first served lets one
long task's requests starve short ones and lets a call with nothing after it
go before the one the whole run waits on. Lower values go first, in the
limiter and in vLLM's priority scheduler alike.

- ``fcfs``: every call 0; arrival order decides (the baseline).
- ``critical``: the call with the most work still downstream first (the SoT
  skeleton before its points, the step with the longest path still ahead).
- ``fair``: least attained service per run (Autellix's program-level LAS):
  the run that has used the fewest tokens so far goes first.
- ``program``: fair across runs, critical within a run.
- ``age``: the run that started first goes first, critical within a run
  (program-level first come first served): a run's later calls no longer
  queue behind the first calls of runs that arrived after it.
"""

from __future__ import annotations

from vivace.choices import Scheduling, values

SCHEDULING = values(Scheduling)

#: Attained service is counted in blocks of this many tokens, so near-equal runs keep arrival order.
SERVICE_BLOCK = 256
#: ``program`` orders by service block first, downstream work second: this many downstream levels fit in one block.
DOWNSTREAM_SPAN = 64


def priority(scheduling: str, downstream: int, attained_tokens: int, started_ms: int = 0) -> int:
    """The call's priority (lower first) under ``scheduling``; ``started_ms`` is when the run began (monotonic)."""
    critical = -min(max(downstream, 0), DOWNSTREAM_SPAN - 1)
    fair = attained_tokens // SERVICE_BLOCK
    if scheduling == "critical":
        return critical
    if scheduling == "fair":
        return fair
    if scheduling == "program":
        return fair * DOWNSTREAM_SPAN + critical
    if scheduling == "age":
        return started_ms * DOWNSTREAM_SPAN + critical
    return 0


def engine_policy(scheduling: str) -> str:
    """vLLM's ``scheduling_policy`` for a vivace ``scheduling`` setting."""
    return "fcfs" if scheduling == "fcfs" else "priority"
