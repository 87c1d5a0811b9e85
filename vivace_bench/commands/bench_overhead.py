"""`vivace bench overhead`: vivace's own cost per run and per branch vs plain asyncio.gather.

It runs on its own zero-latency FakeBackend, so no model or engine flag applies.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config
from vivace_bench import write_report
from vivace_bench.durable_bench import DEFAULT_DB_RUNS, checkpoint_overhead, database_size
from vivace_bench.overhead_bench import DEFAULT_BRANCHES, TARGET_PER_BRANCH_MS, TARGET_PER_RUN_MS, run_bench

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("overhead", parents=[parents.common, parents.json], help="vivace's own cost per run and per branch vs plain asyncio.gather")
    p.add_argument("--branches", type=int, nargs="+", default=list(DEFAULT_BRANCHES), metavar="N", help="fan-out sizes, each >= 2 (default 2 4 8 16 32)")
    p.add_argument("--repeats", type=int, default=40, help="runs per size; medians are reported (default 40)")
    p.add_argument("--warmup", type=int, default=5, help="unreported runs per size first (default 5)")
    p.add_argument("--checkpoint-repeats", type=int, default=60, metavar="N",
                   help="research runs with and without checkpoints, alternating, for the per-step cost (default 60; 0 skips)")
    p.add_argument("--db-runs", type=int, default=DEFAULT_DB_RUNS, metavar="N",
                   help=f"research runs into a fresh checkpoint store, for its size with keep_runs at its default "
                        f"(default {DEFAULT_DB_RUNS}; 0 skips)")
    p.add_argument("--out", default="runs/bench-overhead", metavar="DIR", help="where report.json goes")
    p.set_defaults(handler=cmd_bench_overhead)


async def cmd_bench_overhead(args: argparse.Namespace, config: Config) -> int:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    err = Console(stderr=True)
    out = Path(args.out)
    report: dict[str, Any] = {}
    try:
        await run_bench(
            args.branches, args.repeats, args.warmup, report=report,
            progress=lambda r: err.print(f"  N={r['branches']:<3} vivace {r['vivace_ms']:8.3f} ms  gather {r['baseline_ms']:8.3f} ms  overhead {r['overhead_ms']:8.3f} ms  (hand-written LangGraph {r['langgraph_overhead_ms']:.3f} ms)", highlight=False),
        )
        if args.checkpoint_repeats > 0:
            with err.status("checkpoint cost per step (research pipeline, with and without)..."):
                report["checkpoints"] = await checkpoint_overhead(repeats=args.checkpoint_repeats)
        if args.db_runs > 0:
            with err.status(f"checkpoint database size over {args.db_runs} research runs...") as status:
                report["checkpoint_database"] = await database_size(
                    args.db_runs, progress=lambda i, b: status.update(f"{i} runs: {b / 1e6:.1f} MB"))
    except BaseException:  # interrupted (or failed) part way: the sizes measured so far are kept
        if report.get("rows"):
            write_report(out, {**report, "interrupted": True})
        raise
    write_report(out, report)
    if args.json:
        emit_json(report)
        return 0
    table = Table(title=f"overhead over asyncio.gather, ms, zero-latency fake (medians of {args.repeats})",
                  box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False, title_justify="left")
    for col in ("N", "vivace", "gather", "overhead", "paired", "per point", "LangGraph"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in report["rows"]:
        table.add_row(str(r["branches"]), f"{r['vivace_ms']:.3f}", f"{r['baseline_ms']:.3f}", f"{r['overhead_ms']:.3f}",
                      f"{r['overhead_paired_median_ms']:.3f}", f"{r['overhead_per_branch_ms']:.3f}",
                      f"{r['langgraph_overhead_ms']:.3f}")
    console = Console(width=80)
    console.print(table)
    console.print("N: points; overhead, paired: vivace over gather (of the medians, median of pairs); "
                  "LangGraph: the hand-written LangGraph graph over gather", style="dim", highlight=False)
    s = report["summary"]
    console.print(
        f"fit: {s['per_run_ms']} ms per run + {s['per_branch_ms']} ms per branch (r2 {report['fit']['r2']}); "
        f"target <= {TARGET_PER_RUN_MS} ms + <= {TARGET_PER_BRANCH_MS} ms: "
        f"{'ok' if s['per_run_ok'] else 'MISSED'} / {'ok' if s['per_branch_ok'] else 'MISSED'}",
        highlight=False,
    )
    console.print(
        f"hand-written LangGraph SoT graph (StateGraph, a Send per point, same requests): "
        f"{s['langgraph_per_run_ms']} ms per run + {s['langgraph_per_branch_ms']} ms per branch",
        highlight=False,
    )
    if c := report.get("checkpoints"):
        console.print(f"checkpoints (SQLite, {c['pipeline']}): {c['per_step_ms']} ms per step "
                      f"({c['per_run_ms']} ms per run of {c['steps_per_run']:.0f} steps; saves' own time "
                      f"{c['save_ms_per_step']} ms per step); target <= {c['target_per_step_ms']} ms: "
                      f"{'ok' if c['ok'] else 'MISSED'}", highlight=False)
    if d := report.get("checkpoint_database"):
        console.print(f"checkpoint database: {d['bytes_last'] / 1e6:.1f} MB after {d['runs']} research runs "
                      f"(keep_runs {d['keep_runs']}; {d['bytes_per_run'] / 1e3:.1f} kB per kept run; "
                      f"{'bounded' if d['bounded'] else 'not shown bounded: fewer runs than keep_runs'})",
                      highlight=False)
    console.print(f"report: {out / 'report.json'}  (load average {report['load_average_start']})", highlight=False)
    return 0
