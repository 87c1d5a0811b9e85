"""`vivace ask`: one question, streamed, then one line of timings read from the trace."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from rich.console import Console

from vivace.cli import emit_json, require_question
from vivace.commands import interruptible
from vivace.config import Config
from vivace.agents.events import (
    AnswerDelta,
    AnswerDone,
    BranchDone,
    ErrorEvent,
    Event,
    Routed,
    SkeletonDelta,
    SkeletonDone,
)
from vivace.trace import RunTrace

class PlainPrinter:
    """Consumes controller events in a plain terminal.

    Normal answers stream as they are generated. SoT streams its skeleton, then
    prints the finished answer in point order once every branch is done
    (branches finish out of order; interleaving them would be unreadable).
    """

    def __init__(self, out: TextIO | None, err: Console) -> None:
        self.out = out
        self.err = err
        self.done = 0

    def _write(self, text: str) -> None:
        if self.out is not None:
            self.out.write(text)
            self.out.flush()

    def __call__(self, event: Event) -> None:
        if isinstance(event, Routed):
            self.err.print(f"[dim]route: {event.mode} ({event.reason})[/dim]", highlight=False)
        elif isinstance(event, SkeletonDelta):
            self._write(event.text)
        elif isinstance(event, SkeletonDone):
            self._write("\n")
            if event.fallback:
                self.err.print(f"[dim]skeleton unusable ({event.fallback}); answering normally[/dim]", highlight=False)
            elif self.out is not None:
                self.err.print(f"[dim]expanding {len(event.points)} points in parallel...[/dim]", highlight=False)
        elif isinstance(event, AnswerDelta):
            self._write(event.text)
        elif isinstance(event, BranchDone):
            self.done += 1
        elif isinstance(event, ErrorEvent):
            self.err.print(f"[yellow]{event.node}{'' if event.branch is None else f' {event.branch}'}: {event.message}[/yellow]", highlight=False)
        elif isinstance(event, AnswerDone):
            if event.mode == "sot" and event.points:
                self._write("\n" + event.answer)
            self._write("\n")


def summary_line(run: RunTrace) -> str:
    out = run.output_tokens
    rate = out / run.latency_s if run.latency_s > 0 else 0.0
    ttft = f"{run.ttft_s:.2f} s" if run.ttft_s is not None else "-"
    return (
        f"{run.mode} · TTFT {ttft} · latency {run.latency_s:.2f} s · "
        f"{out} tokens out, {run.prompt_tokens} in · {rate:.1f} tok/s · {len(run.calls)} call(s) · "
        f"{run.backend}:{run.model}"
    )


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
    from vivace.agents.driver import ask, run_record
    from vivace.assembly import open_runtime

    question = require_question(args.question)
    if args.temperature is not None:
        config = config.replace(temperature=args.temperature)
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
    run: RunTrace | None = None
    baseline: RunTrace | None = None
    try:
        def attempt(mode: str, on_event: object, trace_out: str | None) -> object:
            return ask(question, runtime, mode=mode, on_event=on_event, collection=collection,  # type: ignore[arg-type]
                       compression=config.compression, trace_out=trace_out)

        work = attempt(config.mode, printer, args.trace_out)
        if view is not None:
            work = run_live(work, view)
        run = await interruptible(work, backend)  # type: ignore[arg-type]
        if getattr(args, "compare", False) and run.mode == "sot":
            with err.status("measuring normal decoding of the same question (--compare)..."):
                baseline = await interruptible(attempt("normal", None, None), backend)  # type: ignore[arg-type]
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
