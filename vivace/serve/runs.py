"""The run endpoints of ``vivace serve``: one run's record and status, the runs kept, and resuming a run.

Why they read the checkpoint store and not only this process's memory:
replicas of ``vivace serve`` that share one PostgreSQL (``checkpoint_url``)
share their runs. Any replica answers for any run (running, killed, paused
with the approval it waits for, resumed by whom), and any replica can resume
a run that another one started, also one whose replica was killed mid-run;
the steps the checkpoint holds are not run again.

- ``GET /v1/runs/{id}``: the record this process kept, else (or, for a run
  that did not finish, with the status updated) the one in the store; 404
  when neither knows the run.
- ``GET /v1/runs?limit=N``: the store's newest runs, each with its status.
- ``POST /v1/runs/{id}/resume`` (``{"approve": "all"|"none"}``, optional):
  finishes the run here and returns the new run's record; 409 when another
  process holds the run, 400 when it cannot be resumed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, field_validator

from vivace.agents.driver import run_record
from vivace.agents.resume import resume
from vivace.choices import Approve
from vivace.errors import BusyError, RunError, VivaceError
from vivace.serve.state import KEEP_RUNS, RUN_HEADER, ServerState, error, failure
from vivace.trace import RunTrace

if TYPE_CHECKING:
    from vivace.runtime.checkpoints import RunStore, StoredRun

log = logging.getLogger(__name__)

DEFAULT_LIMIT, MAX_LIMIT = 50, 1000


class ResumeRequest(BaseModel):
    """What a person decided about the approval a paused run waits for (none: it pauses there again)."""

    model_config = ConfigDict(extra="forbid")
    approve: Approve | None = None

    @field_validator("approve")
    @classmethod
    def _not_ask(cls, value: Approve | None) -> Approve | None:
        if value == Approve.ASK:  # there is no terminal to ask on: a person answers through this request
            raise ValueError(f"Input should be {Approve.ALL.value!r} or {Approve.NONE.value!r}")
        return value


def _store(state: ServerState) -> RunStore | None:
    """The runtime's checkpoint store (opened on first use); None when checkpoints are off."""
    return state.runtime.checkpoints()  # type: ignore[no-any-return]


def _status(view: dict[str, Any], stored: StoredRun) -> dict[str, Any]:
    """``view`` with what the store says now: status, the approval a paused run waits for, who resumed it."""
    view["status"] = stored.status
    view["saved_steps"] = sorted(stored.steps)
    record_meta = (stored.record or {}).get("meta") or view.get("meta") or {}
    if stored.status == "paused" and record_meta.get("pending_approval"):
        view["pending_approval"] = record_meta["pending_approval"]
    if stored.meta.get("resumed_by"):
        view["resumed_by"] = stored.meta["resumed_by"]
    if stored.meta.get("resumed_from"):
        view["resumed_from"] = stored.meta["resumed_from"]
    return view


def stored_view(stored: StoredRun) -> dict[str, Any]:
    """A run as the store tells it: its record once it ended, else what its header and checkpoint hold."""
    if stored.record is not None:
        return _status(dict(stored.record), stored)
    meta = stored.meta
    view: dict[str, Any] = {
        "run_id": stored.run_id, "status": stored.status, "error": None, "agent": meta.get("agent"),
        "question": stored.header.get("task") or meta.get("task"), "answer": "",
        "started_at": meta.get("started_at"), "meta": {},
    }
    return _status(view, stored)


def run_routes(state: ServerState) -> APIRouter:
    """The run endpoints around ``state``'s runtime and its checkpoint store."""
    router = APIRouter()

    async def load(run_id: str) -> StoredRun | None:
        store = _store(state)
        return await store.load(run_id) if store is not None else None

    @router.get("/v1/runs")
    async def list_runs(limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)) -> Response:
        try:
            store = _store(state)
            if store is None:
                return error(400, "this server keeps no checkpoints (checkpoints = false): there are no runs to list",
                             "invalid_request_error", "checkpoints_off")
            rows = await asyncio.to_thread(store.runs, limit)  # the saver serialises its connection itself
        except VivaceError as exc:
            return error(*failure(exc))
        return JSONResponse({"object": "list", "data": rows})

    @router.get("/v1/runs/{run_id}")
    async def get_run(run_id: str) -> Response:
        record = state.runs.get(run_id)
        if record is not None and record.get("status") == "done":
            return JSONResponse(record)  # a finished run's record never changes
        try:
            stored = await load(run_id)
        except VivaceError as exc:
            if record is not None:  # the database is away: what this process kept still answers
                log.warning("run %s: the checkpoint store is unusable (%s); answering from memory", run_id, exc)
                return JSONResponse(record)
            return error(*failure(exc))
        if stored is not None:
            return JSONResponse(_status(dict(record), stored) if record is not None else stored_view(stored))
        if record is not None:
            return JSONResponse(record)
        return error(404, f"no run {run_id!r} among the last {KEEP_RUNS} of this server or in its checkpoint store",
                     "invalid_request_error", "run_not_found")

    @router.post("/v1/runs/{run_id}/resume")
    async def resume_run(run_id: str, body: Annotated[ResumeRequest | None, Body()] = None) -> Response:
        def on_finish(trace: RunTrace) -> None:
            state.keep(run_record(trace))
            if state.metrics is not None:
                state.metrics.observe(trace.agent or "resume", trace)

        try:
            trace = await resume(run_id, state.runtime, approve=body.approve if body else None, on_finish=on_finish)
        except BusyError as exc:
            return error(409, str(exc), "invalid_request_error", "run_busy")
        except RunError as exc:  # the resumed run failed: its record is kept, and it can be resumed again
            new_id = exc.trace.run_id if isinstance(exc.trace, RunTrace) else None
            return error(*failure(exc), run_id=new_id)
        except VivaceError as exc:
            return error(*failure(exc))
        log.info("run %s resumed as %s: %s", run_id, trace.run_id, trace.status)
        return JSONResponse(run_record(trace), headers={RUN_HEADER: trace.run_id})

    return router
