"""One task as the TUI runs it: the chosen agent through the run driver, on the session's runtime."""

from __future__ import annotations

from typing import Any, Callable

from vivace.agents.driver import run
from vivace.trace import RunTrace

#: The TUI's default "agent": the SoT controller, whose mode F2 cycles.
CONTROLLER = "answer"


async def run_task(
    runtime: Any,
    question: str,
    *,
    agent: str = CONTROLLER,
    mode: str = "auto",
    rag: str | None = None,
    compression: str = "auto",
    on_event: Callable[[Any], None] | None = None,
    on_finish: Callable[[RunTrace], None] | None = None,
    thread: str | None = None,
    approve: Any = None,
) -> RunTrace:
    """The run's trace. ``answer`` is the SoT controller in ``mode``; any other name is a registered agent."""
    target = "sot" if agent == CONTROLLER else agent
    return await run(target, question, runtime, on_event=on_event, options={"mode": mode}, collection=rag,
                     compression=compression, on_finish=on_finish, thread=thread, approve=approve)
