"""`vivace ask`: one question, streamed, then one line of timings read from the trace."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from vivace.commands._io import (
    MODES,
    Parents,
    PlainPrinter,
    Subparsers,
    add_collection,
    add_compression,
    check_run_outputs,
    emit_json,
    interruptible,
    require_question,
    summary_line,
)
from vivace.config import Config

if TYPE_CHECKING:
    from vivace.agents.events import Event
    from vivace.trace import RunTrace

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("ask", parents=parents.calls_model(), help="answer one question, streaming, with timings")
    p.add_argument("question", help="the question to answer")
    p.add_argument("--mode", choices=MODES, help="Skeleton-of-Thought, normal, or let the router decide")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 0: greedy)")
    p.add_argument("--trace-out", metavar="FILE", help="also append the run's trace to this JSONL file")
    p.add_argument("--thread", metavar="ID", help="a conversation: earlier turns of thread ID reach the model, "
                                                  "and this answer becomes its next turn")
    add_collection(p, rag_alias=True, help="retrieve context from this collection before every call")
    add_compression(p)
    p.add_argument("--live", action="store_true", help="live view: skeleton, one panel per point, live figures (on a terminal)")
    p.add_argument("--compare", action="store_true", help="then run normal decoding on the same question and report the measured speedup")
    p.set_defaults(handler=cmd_ask)


def context_line(run: RunTrace) -> str | None:
    """What the calls' context decisions came to, in one line (the details are in each CallTrace)."""
    decisions = [c.extra.get("context") or {} for c in run.calls]
    retrieving = [d for d in decisions if "retrieval" in d]
    if not retrieving:
        return None
    compressed = sum(1 for d in decisions if d.get("compressed"))
    reasons = sorted({d.get("reason", "") for d in decisions if not d.get("compressed") and d.get("reason")})
    return (f"context: {len(retrieving)} of {len(decisions)} call(s) retrieved "
            f"{sum(d.get('retrieved', 0) for d in retrieving)} chunk(s) from {retrieving[0]['retrieval']['collection']!r}; "
            f"{compressed} compressed" + (f"; skipped: {reasons[0]}" if reasons else ""))


async def cmd_ask(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console

    from vivace.agents.driver import ask, run_record
    from vivace.assembly import open_runtime

    question = require_question(args.question)
    check_run_outputs(config, args.trace_out)  # before the run: its record must be writable
    if args.mode:
        config = config.replace(mode=args.mode)
    from vivace.tui.live import live_wanted, print_final, run_live
    from vivace.tui.view import RunView, backend_probe

    err = Console(stderr=True)
    with err.status(f"starting the {config.backend} backend ({config.model})..."):
        runtime = await open_runtime(config)
    backend = runtime.backend
    live = live_wanted(getattr(args, "live", False)) and not args.json
    view = RunView(question, backend_probe(backend), agent="answer") if live else None
    printer = view or PlainPrinter(None if args.json else sys.stdout, err)
    collection = args.collection
    baseline: RunTrace | None = None
    try:
        def attempt(mode: str, on_event: Callable[[Event], None] | None, trace_out: str | None,
                    thread: str | None = None) -> Coroutine[Any, Any, RunTrace]:
            return ask(question, runtime, mode=mode, on_event=on_event, collection=collection,
                       compression=config.compression, trace_out=trace_out, thread=thread)

        work: Awaitable[RunTrace] = attempt(config.mode, printer, args.trace_out, args.thread)
        if view is not None:
            work = run_live(work, view)
        run = await interruptible(work, backend)
        if getattr(args, "compare", False) and run.mode == "sot":
            with err.status("measuring normal decoding of the same question (--compare)..."):
                baseline = await interruptible(attempt("normal", None, None), backend)
            if view is not None:
                view.finish(run, baseline_s=baseline.latency_s)
    finally:
        await runtime.aclose()  # the driver already saved the run's record, also on failure or Ctrl-C
    if (line := context_line(run)) and not args.json:
        err.print(f"[dim]{line}[/dim]", highlight=False)
    if args.json:
        record = run_record(run)
        if baseline is not None:
            record["compare"] = {"normal_latency_s": baseline.latency_s, "speedup": baseline.latency_s / run.latency_s if run.latency_s else None,
                                 "normal_output_tokens": baseline.output_tokens}
        emit_json(record)
        return 0
    if view is not None:
        if baseline is not None:
            Console().print(view.footer())
        print_final(view)
    Console(highlight=False).print(summary_line(run), style="dim")
    if baseline is not None and view is None:
        Console(highlight=False).print(
            f"normal decoding of the same question: {baseline.latency_s:.2f} s, {baseline.output_tokens} tokens · "
            f"measured speedup {baseline.latency_s / run.latency_s:.2f}×", style="dim")
    return 0
