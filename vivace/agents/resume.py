"""``resume``: finish a run that stopped, taking its finished steps from the checkpoint.

Why its own module: it is the run driver again (``vivace.agents.driver.run``)
with what the checkpoint says, after the checks that must pass before any
model call: the run is known, resumable, not held by another process, and
its pipeline has not changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from vivace.agents.base import Agent
from vivace.agents.driver import DEFAULT_HISTORY_BUDGET, run
from vivace.agents.durable import check_resumable, target_of
from vivace.agents.events import Event
from vivace.agents.journal import Approver
from vivace.errors import BusyError, InputError
from vivace.trace import RunTrace

if TYPE_CHECKING:
    from vivace.runtime.runtime import Runtime


async def resume(
    run_id: str,
    runtime: "Runtime",
    *,
    target: str | Agent | None = None,
    on_event: Callable[[Event], None] | None = None,
    approve: Approver = None,
    trace_out: str | Path | None = None,
    on_finish: Callable[[RunTrace], None] | None = None,
    tools: "Sequence[Any] | None" = None,
) -> RunTrace:
    """Finish a run that was killed, interrupted, failed or paused: its finished steps are not run again.

    The resumed run is a new run (its own id and record) that names the one
    it finishes (``meta["resumed_from"]``) and the steps it took from it
    (``meta["resumed_steps"]``). ``target`` is needed only for an agent
    defined in code; ``tools`` for tools that were passed as functions.
    """
    store = runtime.checkpoints()
    if store is None:
        raise InputError("checkpoints are off (checkpoints = false, or a runtime that saves no runs): nothing to resume")
    check_resumable(await store.load(run_id), run_id)
    if not await store.claim(run_id):
        raise BusyError(f"run {run_id} is being resumed by another process")
    try:
        stored = check_resumable(await store.load(run_id), run_id)  # again, now that it is ours
        h = stored.header
        return await run(target_of(stored, target), h["task"], runtime, on_event=on_event, options=h.get("options"),
                         collection=h.get("collection"), compression=h.get("compression"),
                         history_budget_tokens=h.get("history_budget_tokens", DEFAULT_HISTORY_BUDGET),
                         trace_out=trace_out, on_finish=on_finish, thread=h.get("thread"),
                         tools=tools if tools is not None else h.get("tools"), approve=approve, _resume=stored)
    finally:
        await store.release(run_id)
