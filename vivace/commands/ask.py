"""`vivace ask`: one question, streamed, then one line of timings read from the trace."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from vivace.commands._io import (
    MODES,
    Parents,
    PlainPrinter,
    Subparsers,
    add_collection,
    add_compression,
    emit_json,
    interruptible,
    require_question,
    summary_line,
)
from vivace.config import Config

if TYPE_CHECKING:
    from vivace.trace import RunTrace

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("ask", parents=parents.calls_model(), help="answer one question, streaming, with timings")
    p.add_argument("question", help="the question to answer")
    p.add_argument("--mode", choices=MODES, help="Skeleton-of-Thought, normal, or let the router decide")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 0: greedy)")
    p.add_argument("--trace-out", metavar="FILE", help="also append the run's trace to this JSONL file")
    add_collection(p, rag_alias=True, help="retrieve context from this collection first")
    add_compression(p)
    p.add_argument("--live", action="store_true", help="live view: skeleton, one panel per point, live figures (on a terminal)")
    p.add_argument("--compare", action="store_true", help="then run normal decoding on the same question and report the measured speedup")
    p.set_defaults(handler=cmd_ask)


def json_record(run: RunTrace) -> dict:  # type: ignore[type-arg]
    """The `--json` record: the answer, the headline figures, and the whole trace."""
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
    from rich.console import Console

    from vivace.agents import answer_question
    from vivace.errors import VivaceError
    from vivace.runtime import open_backend
    from vivace.trace import save_run

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
        if args.collection:
            from vivace.retrieval.rag import retrieve_context

            with err.status(f"retrieving from {args.collection!r}..."):
                context, context_stats = await retrieve_context(question, config, backend, args.collection)
            decision = context_stats["compression"]
            err.print(
                f"[dim]context: {len(context_stats['chunks'])} chunks from {args.collection!r}; "
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
