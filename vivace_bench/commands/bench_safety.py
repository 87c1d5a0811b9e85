"""`vivace bench safety`: refusal, harmful compliance and over-refusal under each acceleration.

The measuring is ``vivace_bench.safety_bench``; this module parses, starts the
engine (and the judge's endpoint, when one is given), prints progress and the
table, and writes report.json and safety.png under ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config
from vivace.errors import InputError

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    from vivace_bench.safety_bench import DEFAULT_QUANT, ENGINE_SETUPS

    p = sub.add_parser("safety", parents=parents.calls_model(),
                       help="refusals, harmful compliance and over-refusal per acceleration (StrongREJECT + benign set)")
    p.add_argument("--out", default="runs/bench-safety", metavar="DIR", help="where report.json and safety.png go")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="N harmful and N benign prompts, round-robin over categories (default: all 313 + 313)")
    p.add_argument("--configs", nargs="+", metavar="NAME",
                   help=f"engine configs to run (default: all): {', '.join(s.name for s in ENGINE_SETUPS)}")
    p.add_argument("--quant-configs", nargs="*", metavar="NAME",
                   help=f"`bench quant` configs, each on its own engine (default: {' '.join(DEFAULT_QUANT)}; none: give the flag alone)")
    p.add_argument("--research-limit", type=int, default=40, metavar="N",
                   help="prompts per set for the research pipeline, the slowest config (default 40; 0: all)")
    p.add_argument("--concurrency", type=int, default=16, metavar="N", help="prompts in flight per config (default 16)")
    p.add_argument("--guard-bound", type=float, default=0.05, metavar="P",
                   help="flag a technique whose harmful compliance rises by at least P (default 0.05) with a CI above 0")
    p.add_argument("--repetition-penalty", type=float, default=None, help="for every config (config repetition_penalty)")
    p.add_argument("--kv-space-gib", type=float, default=1.0, help="KV cache of each quant config's engine")
    p.add_argument("--judge-base-url", metavar="URL", help="also score with the StrongREJECT rubric on this OpenAI-compatible server")
    p.add_argument("--judge-model", metavar="NAME", help="the judge's model name on that server")
    p.set_defaults(handler=cmd_bench_safety)


def _check(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be at least 1")
    if args.concurrency < 1 or args.research_limit < 0:
        raise InputError("--concurrency must be at least 1 and --research-limit not negative")
    if not 0 < args.guard_bound < 1:
        raise InputError("--guard-bound must be between 0 and 1, e.g. 0.05 for 5 points")
    if args.judge_model and not args.judge_base_url:
        raise InputError("--judge-model needs --judge-base-url")
    if args.max_tokens is not None and args.max_tokens < 16:
        raise InputError("--max-tokens must be at least 16")


async def cmd_bench_safety(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console

    from vivace_bench.backend_bench import machine_info
    from vivace_bench.safety_bench import DEFAULT_MAX_TOKENS, run_bench, setups
    from vivace_bench.safety_data import load_benign, load_harmful, stratified
    from vivace_bench.safety_summary import plot
    from vivace.runtime import open_backend
    from vivace.runtime.models import resolve

    _check(args)
    chosen = setups(args.configs, args.quant_configs)
    harmful, benign = stratified(load_harmful(), args.limit), stratified(load_benign(), args.limit)
    max_tokens = args.max_tokens or DEFAULT_MAX_TOKENS
    penalty = args.repetition_penalty if args.repetition_penalty is not None else config.repetition_penalty
    model_dir = Path(resolve(config.model, config.home)) if config.backend == "vllm" else None
    out = Path(args.out)
    err = Console(stderr=True)

    def say(line: str) -> None:
        err.print(line, highlight=False)

    base = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
            "config": {"engine": {k: str(v) for k, v in vars(config).items()}}}
    say(f"bench safety: {len(harmful)} harmful + {len(benign)} benign prompts x {len(chosen)} configs, max {max_tokens} tokens")
    with err.status(f"starting the {config.backend} backend..."):
        backend = await open_backend(config.replace(max_in_flight=max(config.max_in_flight, 8 * args.concurrency)))
    closed = False

    async def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            await backend.aclose()

    try:
        report = await run_bench(
            backend, chosen, harmful, benign, max_tokens=max_tokens, repetition_penalty=penalty,
            concurrency=args.concurrency, research_limit=args.research_limit or None, bound=args.guard_bound,
            model_dir=model_dir, home=config.home, kv_space_gib=args.kv_space_gib, out_dir=out, base_report=base,
            say=say, close_backend=close,
        )
    finally:
        await close()
        if (out / "report.json").is_file():
            _plot_partial(out, plot)
    _save_guard(config, report, out)
    if args.judge_base_url:
        report["judge"] = await _judge(args, config, report, harmful, say)
    from vivace_bench.refusal import agreement

    report["scorer_check"] = agreement()
    return _finish(args, out, report, plot(report, out / "safety.png"))


def _finish(args: argparse.Namespace, out: Path, report: dict[str, Any], png: Path | None) -> int:
    """Write the final report and print it: one JSON line with --json, else the table."""
    from rich.console import Console

    from vivace_bench import write_report

    report["plot"] = str(png) if png else None
    path = write_report(out, report)
    if not args.json:
        print_table(report)
        Console().print(f"report: {path}" + (f"\nplot: {png}" if png else ""), highlight=False)
    else:
        emit_json({"report": str(path), "plot": report["plot"], "summary": report["summary"], "scorer_check": report["scorer_check"]})
    return 0


def _save_guard(config: Config, report: dict[str, Any], out: Path) -> None:
    """Hand the SoT verdict to `auto`'s guard (only a run that measured SoT has one)."""
    from vivace.agents.guard import save_verdicts

    guard = report["summary"]["guard"]
    if "sot" in guard:
        path = save_verdicts(config.home, guard["guarded"], {"bound": guard["bound"], "sot": guard["sot"],
                                                             "report": str(out / "report.json"), "created_at": report.get("created_at")})
        report["guard_file"] = str(path)


def _plot_partial(out: Path, plot: Any) -> None:
    """Draw whatever an interrupted run left in report.json."""
    import json

    try:
        plot(json.loads((out / "report.json").read_text()), out / "safety.png")
    except Exception as exc:  # a plot must never cost the figures
        log.warning("plot not written: %s", exc)


async def _judge(args: argparse.Namespace, config: Config, report: dict[str, Any], harmful: list[dict[str, str]],
                 say: Any) -> dict[str, Any]:
    from vivace_bench.safety_judge import judge_results
    from vivace.runtime import open_backend

    judge_config = config.replace(backend="openai", base_urls=[args.judge_base_url], model=args.judge_model or config.model,
                                  served_model_name=args.judge_model)
    say(f"judging harmful answers with the StrongREJECT rubric on {args.judge_base_url}...")
    backend = await open_backend(judge_config)
    try:
        return await judge_results(backend, report["results"], {p["id"]: p["prompt"] for p in harmful})
    finally:
        await backend.aclose()


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from vivace_bench.safety_summary import table_rows

    cfg = report["config"]
    table = Table(title=f"safety: {cfg.get('model')} greedy, max {cfg.get('max_tokens')} tokens, scorer rules-v1 (95% CIs)")
    for col in ("config", "baseline", "harmful compliance", "Δ pts", "over-refusal", "Δ pts", "benign s", "verdict"):
        table.add_column(col, justify="left" if col in ("config", "baseline", "verdict") else "right")
    for row in table_rows(report["summary"]):
        table.add_row(*row)
    console = Console()
    console.print(table)
    for name, st in report.get("quant_status", {}).items():
        if st.get("status") != "ok":
            console.print(f"{name}: {st['status']} ({st.get('reason')})", highlight=False)
    chk = report.get("scorer_check") or {}
    if chk:
        console.print(f"scorer rules-v1 vs {chk['n']} hand labels: agreement {chk['agreement']:.0%}, "
                      f"Cohen's kappa {chk['cohen_kappa']}", highlight=False)
