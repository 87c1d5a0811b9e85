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
from vivace.errors import VivaceError
from vivace.runtime import open_backend
from vivace.trace import RunTrace, save_run

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


def json_record(run: RunTrace) -> dict:  # type: ignore[type-arg]
    return {
        "answer": run.answer,
        "mode": run.mode,
        "latency_s": run.latency_s,
        "ttft_s": run.ttft_s,
        "prompt_tokens": run.prompt_tokens,
        "output_tokens": run.output_tokens,
        "tok_s": run.output_tokens / run.latency_s if run.latency_s > 0 else 0.0,
        "model": run.model,
        "backend": run.backend,
        "run_id": run.run_id,
        "router": run.meta.get("router"),
        "points": run.meta.get("points", []),
        "meta": run.meta,
        "calls": [c.to_dict() for c in run.calls],
        "trace": run.to_dict(),
    }


async def cmd_ask(args: argparse.Namespace, config: Config) -> int:
    from vivace.agents import answer_question

    question = require_question(args.question)
    if args.temperature is not None:
        config = config.replace(temperature=args.temperature)
    if args.mode:
        config = config.replace(mode=args.mode)
    from vivace.tui.live import live_wanted, print_final, run_live
    from vivace.tui.view import RunView, backend_probe

    err = Console(stderr=True)
    with err.status(f"starting the {config.backend} backend ({config.model})..."):
        backend = await open_backend(config)
    live = live_wanted(getattr(args, "live", False)) and not args.json
    view = RunView(question, backend_probe(backend), agent="answer") if live else None
    printer = view or PlainPrinter(None if args.json else sys.stdout, err)
    run: RunTrace | None = None
    baseline: RunTrace | None = None
    try:
        context, context_stats = None, None
        if args.rag:
            from vivace.retrieval.rag import retrieve_context

            with err.status(f"retrieving from {args.rag!r}..."):
                context, context_stats = await retrieve_context(question, config, backend, args.rag)
            decision = context_stats["compression"]
            err.print(
                f"[dim]context: {len(context_stats['chunks'])} chunks from {args.rag!r}; "
                f"compression {'applied (' + str(decision.get('method')) + ')' if decision.get('compress') else 'skipped'}: "
                f"{decision.get('reason', '')}[/dim]",
                highlight=False,
            )
        def attempt(mode: str, on_event: object) -> object:
            return answer_question(
                question,
                backend,
                mode=mode,
                max_tokens=config.max_tokens,
                temperature=config.temperature,
                repetition_penalty=config.repetition_penalty,
                max_points=config.sot_max_points,
                on_event=on_event,  # type: ignore[arg-type]
                context=context,
                context_stats=context_stats,
            )

        work = attempt(config.mode, printer)
        if view is not None:
            work = run_live(work, view)
        run = await interruptible(work, backend)  # type: ignore[arg-type]
        if getattr(args, "compare", False) and run.mode == "sot":
            with err.status("measuring normal decoding of the same question (--compare)..."):
                baseline = await interruptible(attempt("normal", None), backend)  # type: ignore[arg-type]
            if view is not None:
                view.finish(run, baseline_s=baseline.latency_s)
    except VivaceError as exc:
        run = getattr(exc, "trace", None)  # the controller keeps what the run gathered
        raise
    finally:
        await backend.aclose()
        if run is not None:
            save_run(run.to_dict(), config.runs_dir, args.trace_out)
    if args.json:
        record = json_record(run)
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
