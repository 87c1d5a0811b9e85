"""`vivace bench sot`: Skeleton-of-Thought vs normal vs auto, per question.

The measuring is ``vivace_bench.sot_bench.run_bench``; this module parses, starts the
engine, prints progress and the table, and keeps a partial report's plot on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config
from vivace.errors import InputError
from vivace_bench import write_report
from vivace_bench.sot_bench import DEFAULT_MAX_TOKENS, load_questions, plot, run_bench, select

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("sot", parents=parents.calls_model(), help="Skeleton-of-Thought vs normal vs auto: speedup and length per question")
    p.add_argument("--questions", metavar="FILE.jsonl", help='lines of {"id", "question", "category"} (default: the bundled 45)')
    p.add_argument("--out", default="runs/bench-sot", metavar="DIR", help="where report.json and speedup.png go")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="run only N questions (round-robin over categories)")
    p.add_argument("--categories", nargs="+", metavar="CAT", help="only these categories")
    p.add_argument("--repetition-penalty", type=float, default=None, help="for every mode (config repetition_penalty)")
    p.add_argument("--max-points", type=int, default=None, help="SoT point cap (config sot_max_points)")
    p.add_argument("--judge-base-url", metavar="URL",
                   help="an OpenAI-compatible server whose model judges SoT's answer against normal's (win/tie/lose)")
    p.add_argument("--judge-model", metavar="NAME", help="the judge's model (default: the server's first)")
    p.add_argument("--pipelined", action="store_true",
                   help="also run pipelined SoT per question (points start while the skeleton is decoded)")
    p.add_argument("--unplanned", action="store_true",
                   help="also run SoT without its length plan per question (the plan's ablation)")
    p.add_argument("--reference", action="store_true",
                   help="also decode each question normally under another neutral system prompt: how much two "
                        "normal answers share (the ceiling to read coverage against)")
    p.set_defaults(handler=cmd_bench_sot)
    # --max-tokens comes from the common options; unset, the bench uses DEFAULT_MAX_TOKENS.


async def cmd_bench_sot(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console

    from vivace_bench.backend_bench import machine_info
    from vivace.runtime import open_backend

    questions = select(load_questions(args.questions), args.categories, args.limit)
    max_tokens = args.max_tokens if args.max_tokens is not None else DEFAULT_MAX_TOKENS
    if max_tokens < 16:
        raise InputError("--max-tokens must be at least 16")
    penalty = args.repetition_penalty if args.repetition_penalty is not None else config.repetition_penalty
    max_points = args.max_points if args.max_points is not None else config.sot_max_points
    if max_points < 2:
        raise InputError("--max-points must be at least 2")
    out = Path(args.out)
    err = Console(stderr=True)
    # Every point of a skeleton must be in flight at once.
    config = config.replace(max_in_flight=max(config.max_in_flight, max_points))
    base = {
        "bench": "sot",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "config": {"questions_file": str(args.questions or "bundled:vivace_bench/data/sot_questions.jsonl"), "engine": {k: str(v) for k, v in vars(config).items()}},
    }
    judge = await _judge(args, config)
    try:
        with err.status(f"starting the {config.backend} backend..."):
            backend = await open_backend(config)
    except BaseException:
        if judge is not None:
            await judge.aclose()
        raise
    try:
        report = await _run_and_close(backend, questions, err, max_tokens, penalty, max_points, out, base,
                                      args.pipelined, judge, args.unplanned, args.reference)
    except BaseException:
        # Interrupted: report.json holds every finished question; draw those too.
        if (out / "report.json").is_file():
            partial = json.loads((out / "report.json").read_text())
            if partial.get("questions"):
                plot(partial, out / "speedup.png")
                err.print(f"interrupted: {len(partial['questions'])} questions in {out / 'report.json'}", highlight=False)
        raise
    png = plot(report, out / "speedup.png")
    report["plot"] = str(png) if png else None
    path = write_report(out, report)
    if args.json:
        emit_json({"report": str(path), "plot": report["plot"], "config": report["config"], "summary": report["summary"]})
        return 0
    print_table(report)
    Console().print(f"report: {path}" + (f"\nplot: {png}" if png else ""), highlight=False)
    return 0


async def _run_and_close(
    backend: Any, questions: list[dict[str, str]], err: Any, max_tokens: int, penalty: float, max_points: int,
    out: Path, base: dict[str, Any], pipelined: bool = False, judge: Any = None, unplanned: bool = False,
    reference: bool = False,
) -> dict[str, Any]:
    try:
        err.print(f"running {len(questions)} questions x (normal, sot, auto), max {max_tokens} tokens", highlight=False)
        total = len(questions)

        def progress(row: dict[str, Any]) -> None:
            n = len(progress.rows) + 1  # type: ignore[attr-defined]
            progress.rows.append(row)  # type: ignore[attr-defined]
            err.print(
                f"  [{n}/{total}] {row['id']:<18} normal {row['normal']['latency_s']:6.2f} s {row['normal']['output_tokens']:4d} tok"
                f"{' (cap)' if row['normal']['truncated'] else ''} | sot {row['sot']['latency_s']:6.2f} s "
                f"{row['sot']['output_tokens']:4d} tok {row['sot']['points']} pts{' fallback' if row['sot']['fallback'] else ''}"
                f" | auto->{row['mode_auto']} {row['auto']['latency_s']:6.2f} s | x{_fmt(row['speedup_sot'])}"
                + (f" | pipelined x{_fmt(row['pipelined']['speedup'])}" if "pipelined" in row else "")
                + (f" | unplanned x{_fmt(row['unplanned']['speedup'])} {row['unplanned']['output_tokens']} tok"
                   if "unplanned" in row else ""),
                highlight=False,
            )

        progress.rows = []  # type: ignore[attr-defined]
        report = await run_bench(
            backend, questions, max_tokens=max_tokens, repetition_penalty=penalty, max_points=max_points,
            out_dir=out, base_report=base, progress=progress, pipelined=pipelined, judge=judge, unplanned=unplanned,
            reference=reference,
        )
        report["load_s"] = getattr(backend, "load_s", None)
        return report
    finally:
        await backend.aclose()
        if judge is not None:
            await judge.aclose()


async def _judge(args: argparse.Namespace, config: Config) -> Any:
    """The judge's backend, or None; an unreachable judge fails before the engine starts."""
    if not args.judge_base_url:
        if args.judge_model:
            raise InputError("--judge-model needs --judge-base-url")
        return None
    from vivace.runtime.openai_http import OpenAIBackend

    return await OpenAIBackend.connect([args.judge_base_url], args.judge_model, api_key_env=config.api_key_env,
                                       timeout_s=config.request_timeout_s, retries=config.connect_retries)


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def _pct(v: float | None) -> float | None:
    return None if v is None else v * 100


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = report["summary"]
    cfg = report["config"]
    table = Table(title=f"SoT bench: {cfg.get('model')} greedy, max {cfg.get('max_tokens')} tokens, {s['n']} questions")
    # Short headings, so the table fits 80 columns; the legend under it says what they are.
    for col in ("category", "n", "SoT×", "auto×", "len", "cover", "pts", "→SoT", "fallb", "cap"):
        table.add_column(col, justify="right" if col != "category" else "left")

    def add(name: str, g: dict[str, Any], style: str | None = None) -> None:
        table.add_row(
            name, str(g["n"]), _fmt(g["speedup_sot_median"]),
            _fmt(g["speedup_auto_median"]), _fmt(g["length_ratio_median"]), _fmt(g.get("coverage_median")),
            _fmt(g["sot_points_median"], ".0f"),
            str(g["routed_sot"]), str(g["fallbacks"]), str(g["normal_truncated"]), style=style,
        )

    for cat, g in s["by_category"].items():
        add(cat, g)
    table.add_section()
    add("SoT-suited", s["suited"], "bold")
    add("all", s["overall"], "bold")
    console = Console()
    console.print(table)
    console.print(
        "SoT×/auto×: median speedup over normal decoding; len: SoT/normal output tokens; cover: share of the normal "
        "answer's content in SoT's; pts: median points; →SoT: routed to SoT by auto; fallb: SoT fell back to normal; "
        "cap: normal answers cut at the token cap (SoT× without them: "
        f"{_fmt(s['suited']['speedup_sot_median_untruncated'])} on the suited questions).",
        style="dim", width=min(console.width, 80), highlight=False)
    a = s["auto_routed_normal"]
    console.print(
        f"auto routed to normal: {a['n']} questions, latency over normal median {_fmt(_pct(a['overhead_median']))}%, "
        f"max {_fmt(_pct(a['overhead_max']))}% ({a['overhead_max_id']}), router median {_fmt(a['route_median_ms'])} ms",
        highlight=False,
    )
    g = s["suited"]
    for arm, label in (("pipelined", "pipelined SoT"), ("unplanned", "SoT without the length plan")):
        if g.get(f"{arm}_speedup_median") is None:
            continue
        hidden = g.get(f"{arm}_skeleton_hidden_share_median")
        console.print(
            f"{label} (suited): x{_fmt(g[f'{arm}_speedup_median'])} vs normal, x{_fmt(g[f'{arm}_vs_sot_median'])} vs SoT, "
            f"length {_fmt(g[f'{arm}_length_ratio_median'])}, coverage {_fmt(g[f'{arm}_coverage_median'])}"
            + (f", hides {_fmt(_pct(hidden), '.0f')}% of the skeleton's time" if hidden is not None else ""),
            highlight=False,
        )
    if g.get("reference_coverage_median") is not None:
        console.print(f"reference (suited): a second normal answer under another neutral system prompt covers "
                      f"{_fmt(g['reference_coverage_median'])} of the first (length {_fmt(g['reference_length_ratio_median'])}): "
                      "the ceiling for SoT's coverage", highlight=False)
    if g.get("plan_error_median") is not None:
        console.print(f"length plan (suited): the expected normal length was off by a median "
                      f"{_fmt(_pct(g['plan_error_median']), '.0f')}%", highlight=False)
    if g.get("judge"):
        j = g["judge"]
        console.print(f"judge ({cfg.get('judge')}), SoT vs normal on the suited questions: {j['win']} win, {j['tie']} tie, "
                      f"{j['lose']} lose, {j['unparsed']} unparsed (both orders; score {_fmt(j['sot_score'])})",
                      highlight=False)
    r = s["routing"]
    console.print(
        f"math/coding routed to SoT: {', '.join(r['math_coding_routed_sot']) or 'none'} (of {r['math_coding_checked']})",
        highlight=False,
    )
    console.print("targets: " + ", ".join(f"{k} {'ok' if v else ('-' if v is None else 'MISSED')}" for k, v in s["targets"].items()), highlight=False)
