"""What the run driver saves of a run before it starts, and how a saved run is found and checked for resuming.

Why a header: a resume must run the same thing on the same task with the
same options, or the saved steps would be answers to another question. The
header names the target (a registry name, a pipeline file, or an in-code
agent), the structure it had (a fingerprint of its steps, edges and loops),
and the run's arguments; a pipeline changed since is refused, not mixed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vivace.agents.base import Agent
from vivace.agents.pipeline.spec import Pipeline
from vivace.errors import BusyError, InputError, VivaceError

if TYPE_CHECKING:
    from vivace.agents.journal import Journal
    from vivace.runtime.checkpoints import RunStore, StoredRun
    from vivace.trace import RunTrace

log = logging.getLogger(__name__)


RESUMABLE = ("failed", "interrupted", "killed", "paused")


def fingerprint(pipe: Pipeline) -> str:
    """The pipeline's structure: what its step keys and saved outputs mean."""
    steps = [[s.name, s.agent, s.fan_out, s.per_item, s.max_branches, s.params, s.model, s.sampling.as_dict(), list(s.tools),
              s.requires_approval, type(s.impl).__name__ if s.impl is not None else None] for s in pipe.step_list]
    loops = [[lp.source, lp.target, lp.when, lp.max_rounds] for lp in pipe.loops]
    text = json.dumps([pipe.name, steps, [list(e) for e in pipe.edges], loops, pipe.output], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def header(target: "str | Agent", pipe: Pipeline, task: str, args: dict[str, Any]) -> dict[str, Any]:
    """What a resume needs to run the same thing again (``args``: the run's own keyword arguments)."""
    if isinstance(target, Agent):
        spec: dict[str, Any] = {"kind": "object", "name": target.name}
        if isinstance(target, Pipeline) and target.source_file:  # read from a file: the file is what to run again
            spec = {"kind": "file", "path": target.source_file}
        elif _registered(target):
            spec = {"kind": "name", "name": target.name}
    elif target.endswith(".toml"):
        spec = {"kind": "file", "path": str(Path(target).resolve())}
    else:
        spec = {"kind": "name", "name": target}
    return {"target": spec, "fingerprint": fingerprint(pipe), "task": task, **args}


def _registered(item: Agent) -> bool:
    """``item`` is what the registry gives for its name (``vivace run research`` resolves it before the run)."""
    from vivace.agents.registry import REGISTRY

    try:
        return REGISTRY.get(item.name) is item
    except Exception:  # noqa: BLE001 - not registered (an InputError), or a plug-in that fails to load
        return False


def target_of(stored: "StoredRun", given: "str | Agent | None") -> "str | Agent":
    """What to run again: the one given (an in-code agent must be), else the saved name or file."""
    spec = stored.header.get("target") or {}
    if given is not None:
        return given
    if spec.get("kind") == "object":
        raise InputError(f"run {stored.run_id} ran an agent defined in code ({spec.get('name')!r}): "
                         "pass it to resume(..., target=)")
    if spec.get("kind") == "file":
        path = spec["path"]
        if not Path(path).is_file():
            raise InputError(f"run {stored.run_id} ran the pipeline file {path}, which is gone")
        return str(path)
    return str(spec.get("name"))


def check_resumable(stored: "StoredRun | None", run_id: str) -> "StoredRun":
    """The stored run if it can be resumed; else one line saying why (exit 2)."""
    if stored is None:
        raise InputError(f"no run {run_id!r} in the checkpoint store (vivace runs list shows the runs kept)")
    if stored.status == "running":
        raise BusyError(f"run {run_id} is running in another process")
    if stored.status == "resumed":
        raise InputError(f"run {run_id} was already resumed as {stored.meta.get('resumed_by')}; resume that one")
    if stored.status not in RESUMABLE:
        raise InputError(f"run {run_id} finished ({stored.status}); there is nothing to resume")
    return stored


def check_same(stored: "StoredRun", pipe: Pipeline) -> None:
    """The pipeline to resume is the one the run started with."""
    if stored.header.get("fingerprint") != fingerprint(pipe):
        spec = stored.header.get("target") or {}
        where = spec.get("path") or spec.get("name") or pipe.name
        raise InputError(f"the pipeline {where} changed since run {stored.run_id} started; "
                         "resuming would mix two pipelines (start a new run)")


def gated_steps(pipe: Pipeline) -> list[str]:
    """The steps of ``pipe`` (and of the pipelines inside it) that require approval."""
    out = []
    for step in pipe.step_list:
        if step.requires_approval:
            out.append(step.name)
        if isinstance(step.impl, Pipeline):
            out += gated_steps(step.impl)
    return out


def durable_meta(trace: "RunTrace", journal: "Journal", resumed: "StoredRun | None") -> None:
    """What the checkpoints did for this run: steps saved and their seconds, steps taken from the run resumed."""
    if journal.store is not None:
        trace.checkpoint = {"steps_saved": journal.saved, "save_s": round(journal.save_s, 6),
                            "store": journal.store.kind}
    trace.approval_wait_s = round(journal.wait_s, 3)  # inside the run's latency: a person answering
    if resumed is not None:
        trace.meta["resumed_from"] = resumed.run_id
        trace.meta["resumed_steps"] = [k for k in journal.resumed if not k.endswith("/approval")]


async def checkpoint_end(store: "RunStore", trace: "RunTrace", record: dict[str, Any], resumed: "StoredRun | None",
                         thread: str | None) -> None:
    """The run's status and record in its checkpoint; the run it resumed now points here; a thread's next turn."""
    try:
        if thread is not None and trace.status == "done":
            await asyncio.shield(store.add_turn(thread, {"user": trace.question, "assistant": trace.answer,
                                                         "run_id": trace.run_id}))
        await asyncio.shield(store.finish(trace.run_id, trace.status, record,
                                          {"answer": trace.answer[:200], "latency_s": round(trace.latency_s, 3)}))
        if resumed is not None:
            await asyncio.shield(store.mark(resumed.run_id, "resumed", resumed_by=trace.run_id))
    except (VivaceError, asyncio.CancelledError) as exc:  # the run's own record is saved; its checkpoint says running
        log.error("could not close the run's checkpoint: %s", exc or "interrupted")
