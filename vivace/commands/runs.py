"""`vivace runs list` and `vivace resume RUN_ID`: the checkpointed runs, and finishing one that stopped.

Why ``runs list`` starts no engine: it reads the checkpoint store only, so it
answers at once, also while the engine would be busy. ``resume`` resolves
the run and checks that it can be resumed (known, not finished, not held by
another process, the same pipeline) before any engine starts.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
from typing import Any

from vivace.commands._io import Parents, Subparsers, add_approve, approver, emit_json, interruptible
from vivace.config import Config

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    runs = sub.add_parser("runs", help="the checkpointed runs: list them (resume one with `vivace resume`)")
    rsub = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    lst = rsub.add_parser("list", parents=[parents.common, parents.json],
                          help="the newest runs with their status (killed: it stopped without a word)")
    lst.add_argument("--limit", type=int, default=20, metavar="N", help="how many runs (default 20)")
    lst.set_defaults(handler=cmd_list)
    res = sub.add_parser("resume", parents=parents.calls_model(),
                         help="finish a killed, interrupted, failed or paused run; finished steps are not run again")
    res.add_argument("run_id", help="the run to finish (see `vivace runs list`)")
    add_approve(res)
    res.add_argument("--trace-out", metavar="FILE", help="also append the resumed run's trace to this JSONL file")
    res.set_defaults(handler=cmd_resume)


def _when(ts: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return "?"


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    from vivace.errors import InputError
    from vivace.runtime.checkpoints import RunStore

    if args.limit < 1:
        raise InputError("--limit must be at least 1")
    if not config.checkpoints:
        raise InputError("checkpoints are off in the config (checkpoints = false): no runs are kept")
    store = RunStore.open(config.checkpoint_url, config.home, config.keep_runs)
    try:
        rows = store.runs(args.limit)
    finally:
        asyncio.run(store.aclose())
    if args.json:
        emit_json({"runs": rows, "store": store.where})
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs · {store.where}")
    for col in ("run", "status", "agent", "started", "s", "task"):
        table.add_column(col, justify="right" if col == "s" else "left", no_wrap=col != "task")
    colors = {"done": "green", "failed": "red", "killed": "red", "interrupted": "yellow", "paused": "yellow"}
    for r in rows:
        status = r.get("status", "?")
        note = f" → {r['resumed_by']}" if r.get("resumed_by") else ""
        table.add_row(r["run_id"], f"[{colors.get(status, 'white')}]{status}[/]{note}", str(r.get("agent", "")),
                      _when(r.get("started_at")), f"{r['latency_s']:.1f}" if r.get("latency_s") is not None else "",
                      str(r.get("task", ""))[:60])
    Console(highlight=False).print(table)
    return 0


async def cmd_resume(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console

    from vivace.agents.driver import run_record
    from vivace.agents.resume import resume
    from vivace.assembly import open_runtime
    from vivace.commands.run import print_outcome, _Printer
    from vivace.runtime.checkpoints import RunStore
    from vivace.agents.durable import check_resumable, target_of
    from vivace.agents.driver import resolve
    from vivace.errors import InputError

    if not config.checkpoints:
        raise InputError("checkpoints are off in the config (checkpoints = false): nothing to resume")
    store = RunStore.open(config.checkpoint_url, config.home, config.keep_runs)
    try:  # before any engine starts: an unknown, finished, busy or changed run is one line
        stored = check_resumable(store.load_now(args.run_id), args.run_id)
    finally:
        await store.aclose()
    from vivace.agents.durable import check_same
    from vivace.agents.pipeline.spec import single

    item = resolve(target_of(stored, None))
    check_same(stored, single(item))
    err = Console(stderr=True)
    with err.status(f"starting the {config.backend} backend ({config.model})..."):
        runtime = await open_runtime(config)
    printer = None if args.json else _Printer(stream_text=False)
    try:
        trace = await interruptible(resume(args.run_id, runtime, on_event=printer, approve=approver(args.approve),
                                           trace_out=args.trace_out), runtime.backend)
    finally:
        await runtime.aclose()
    if args.json:
        emit_json(run_record(trace))
        return 0
    err.print(f"[dim]resumed {args.run_id} as {trace.run_id}: {len(trace.meta.get('resumed_steps', []))} "
              f"finished step(s) taken from the checkpoint, not run again[/]")
    print_outcome(trace, None)
    return 0
