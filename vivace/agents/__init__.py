"""The LangGraph controller and its agents.

``answer_question`` runs one question through the controller (router, then
SoT or normal decoding), hands every event to ``on_event`` as it streams, and
returns the ``RunTrace``. ``route`` is the router on its own, with no backend.
LangGraph is imported on first use, so the CLI and the router stay quick to import.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from vivace.agents.events import (
    AnswerDelta,
    AnswerDone,
    BranchDelta,
    BranchDone,
    ErrorEvent,
    Event,
    Routed,
    RunStarted,
    SkeletonDelta,
    SkeletonDone,
)
from vivace.agents.router import MODES, route
from vivace.errors import InputError
from vivace.trace import CallTrace, RunTrace

if TYPE_CHECKING:
    from vivace.runtime.backend import Backend

log = logging.getLogger(__name__)

__all__ = [
    "AnswerDelta",
    "AnswerDone",
    "BranchDelta",
    "BranchDone",
    "ErrorEvent",
    "Event",
    "MODES",
    "Routed",
    "RunStarted",
    "SkeletonDelta",
    "SkeletonDone",
    "answer_question",
    "route",
]


class _Recorder:
    """Builds the RunTrace from the event stream, so a failed run keeps what it gathered."""

    def __init__(self, trace: RunTrace, on_event: Callable[[Event], None] | None) -> None:
        self.trace = trace
        self.on_event = on_event
        self.failed: dict[int, str] = {}

    def __call__(self, event: Event) -> None:
        meta = self.trace.meta
        if isinstance(event, Routed):
            meta["router"] = {"mode": event.mode, "reason": event.reason}
            self.trace.mode = event.mode
        elif isinstance(event, SkeletonDone):
            meta["points"] = list(event.points)
            meta["skeleton"] = event.text
            meta["fallback"] = event.fallback
            if event.fallback:
                self.trace.mode = "normal"
            self._add(event.call)
        elif isinstance(event, BranchDone):
            if event.error:
                self.failed[event.index] = event.error
            self._add(event.call)
        elif isinstance(event, AnswerDone):
            self.trace.answer = event.answer
            self._add(event.call)
        if self.on_event is not None:
            self.on_event(event)

    def _add(self, call: CallTrace | None) -> None:
        if call is not None:
            self.trace.calls.append(call)


async def answer_question(
    question: str,
    backend: "Backend",
    *,
    mode: str = "auto",
    max_tokens: int = 512,
    temperature: float = 0.0,
    repetition_penalty: float = 1.15,
    max_points: int = 8,
    on_event: Callable[[Event], None] | None = None,
    min_points: int = 2,
    point_max_tokens: int | None = None,
    branch_timeout_s: float | None = None,
    fail_on_branch_error: bool = False,
    context: str | None = None,
    context_stats: dict[str, Any] | None = None,
) -> RunTrace:
    """Answer ``question`` with SoT or normal decoding and return the run's trace.

    ``mode`` is ``sot``, ``normal`` or ``auto`` (the router decides). A failed
    point is marked in the answer, reported as an ``ErrorEvent`` and listed in
    ``trace.meta["failed_points"]`` and ``trace.error``; ``context`` (retrieved
    text) goes first in every prompt, ``context_stats`` into every CallTrace; with
    ``fail_on_branch_error`` it raises instead. Any failure that leaves no
    answer raises ``ControllerError`` whose ``trace`` holds the calls so far.
    """
    from vivace.agents.sot import Context, ControllerError, Options, controller, initial_state

    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not question.strip():
        raise InputError("the question is empty")
    if max_points < 1 or max_tokens < 1:
        raise InputError("max_points and max_tokens must be at least 1")
    options = Options(
        mode=mode,
        max_tokens=max_tokens,
        temperature=temperature,
        repetition_penalty=repetition_penalty,
        max_points=max_points,
        min_points=min_points,
        point_max_tokens=point_max_tokens,
        branch_timeout_s=branch_timeout_s,
        fail_on_branch_error=fail_on_branch_error,
        context=context,
        context_stats=context_stats,
    )
    trace = RunTrace(question=question, mode=mode, model=backend.model, backend=backend.name)
    trace.meta.update(requested_mode=mode, router=None, points=[], fallback=None, failed_points={}, stages={})
    if context_stats:
        trace.meta["context"] = context_stats
    recorder = _Recorder(trace, on_event)
    t0 = time.perf_counter()
    final: dict[str, Any] = {}
    try:
        async for kind, chunk in controller().astream(
            initial_state(question, trace.run_id),
            context=Context(backend=backend, options=options),
            stream_mode=["custom", "values"],
        ):
            if kind == "custom":
                recorder(chunk)
            else:
                final = chunk
    except ControllerError as exc:
        _finish(trace, recorder, final, t0, error=str(exc))
        exc.trace = trace
        raise
    except Exception as exc:
        message = str(exc) or type(exc).__name__
        _finish(trace, recorder, final, t0, error=message)
        error = ControllerError(f"the run failed: {message}", trace)
        error.exit_code = getattr(exc, "exit_code", ControllerError.exit_code)  # bad input stays exit 2
        raise error from exc
    _finish(trace, recorder, final, t0)
    return trace


def _finish(trace: RunTrace, recorder: _Recorder, final: dict[str, Any], t0: float, error: str | None = None) -> None:
    trace.latency_s = time.perf_counter() - t0
    stages = dict(final.get("stages") or {})
    stages["total"] = trace.latency_s
    trace.meta["stages"] = stages
    trace.meta["failed_points"] = dict(recorder.failed)
    trace.calls.sort(key=lambda c: (c.started_at, c.branch or 0))
    if error is None and recorder.failed:
        error = "; ".join(f"point {i} failed: {msg}" for i, msg in sorted(recorder.failed.items()))
    trace.error = error
