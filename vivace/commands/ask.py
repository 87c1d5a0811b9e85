"""`vivace ask`: one question, streamed, then one line of timings read from the trace."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

from vivace.cli import emit_json, require_question
from vivace.config import Config
from vivace.runtime import Delta, GenerationRequest, GenerationResult, open_backend
from vivace.trace import CallTrace, RunTrace, append_jsonl

SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and accurately."


async def answer_normal(run: RunTrace, backend, config: Config, on_text=None) -> RunTrace:  # type: ignore[no-untyped-def]
    """One plain call: what a user gets without vivace's techniques. Fills ``run`` even on failure."""
    question = run.question
    run.mode = "normal"
    t0 = time.perf_counter()
    request = GenerationRequest(
        messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        repetition_penalty=config.repetition_penalty,
        tag="normal",
    )
    try:
        async for event in backend.generate(request):
            if isinstance(event, Delta) and on_text:
                on_text(event.text)
            elif isinstance(event, GenerationResult):
                run.calls.append(CallTrace.from_result(event, node="normal"))
                run.answer = event.text
    except BaseException as exc:
        run.error = str(exc) or type(exc).__name__
        raise
    finally:
        run.latency_s = time.perf_counter() - t0
    return run


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
        "meta": run.meta,
        "calls": [c.to_dict() for c in run.calls],
    }


async def cmd_ask(args: argparse.Namespace, config: Config) -> int:
    question = require_question(args.question)
    if args.temperature is not None:
        config = config.replace(temperature=args.temperature)
    err = Console(stderr=True)
    stream = None if args.json else (lambda text: (sys.stdout.write(text), sys.stdout.flush()))
    with err.status(f"starting the {config.backend} backend ({config.model})..."):
        backend = await open_backend(config)
    run = RunTrace(question=question, mode=config.mode, model=backend.model, backend=backend.name)
    try:
        await answer_normal(run, backend, config, on_text=stream)
    finally:
        await backend.aclose()
        _save(run, config, args.trace_out)
    if args.json:
        emit_json(json_record(run))
    else:
        sys.stdout.write("\n")
        Console(highlight=False).print(summary_line(run), style="dim")
    return 0


def _save(run: RunTrace, config: Config, extra: str | None) -> None:
    record = run.to_dict()
    append_jsonl(config.runs_dir / "runs.jsonl", record)
    if extra:
        append_jsonl(Path(extra), record)
