"""`vivace bench load`: many agent tasks at once, through the process-wide in-flight cap.

The measuring is ``vivace_bench.load_bench.run_bench``; this module parses, starts the engine,
assembles the report (kept when interrupted) and prints.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config
from vivace_bench import write_report
from vivace_bench.load_bench import DEFAULT_LEVELS, SERIES, plot, run_bench

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("load", parents=parents.calls_model(), help="N agent tasks at concurrency C: tasks/min, p50/p95, peak in flight, KV use")
    p.add_argument("--tasks", type=int, default=32, metavar="N", help="tasks per level (default 32)")
    p.add_argument("--concurrency", type=int, nargs="+", default=list(DEFAULT_LEVELS), metavar="C", help="levels (default 1 8 16 32)")
    p.add_argument("--series", nargs="+", choices=SERIES, default=list(SERIES), help="which series to run (default all three: normal sot auto)")
    p.add_argument("--repeats", type=int, default=1, metavar="R",
                   help="runs of every level and series, interleaved; the report keeps their medians (default 1)")
    p.add_argument("--out", default="runs/bench-load", metavar="DIR", help="where report.json and load.png go")
    p.set_defaults(handler=cmd_bench_load)


async def cmd_bench_load(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console

    from vivace.errors import InputError
    from vivace_bench.backend_bench import machine_info
    from vivace.runtime import open_backend

    if args.tasks < 1 or args.repeats < 1 or any(c < 1 for c in args.concurrency):
        raise InputError("--tasks, --repeats and every --concurrency value must be at least 1")
    levels = sorted(set(args.concurrency))
    opts = {"max_tokens": config.max_tokens, "temperature": config.temperature,
            "repetition_penalty": config.repetition_penalty, "max_points": config.sot_max_points}
    err = Console(stderr=True)
    with err.status(f"starting the {config.backend} backend..."):
        backend = await open_backend(config)
    out = Path(args.out)
    report: dict[str, Any] = {"bench": "load", "series": {}}
    t0 = time.perf_counter()
    try:
        report = await run_bench(
            backend, args.tasks, levels, args.series, opts, repeats=args.repeats,
            progress=lambda r: err.print(
                f"  {r['series']:<6} C={r['concurrency']:<3} {r['tasks_per_min']:6.1f} tasks/min  p50 {r['p50_s']:.2f} s  "
                f"p95 {r['p95_s']:.2f} s  peak in flight {r['peak_in_flight']}  SoT runs {r['sot_runs']}", highlight=False),
        )
    finally:
        await backend.aclose()
        report.update(
            backend=backend.name, model=backend.model, load_s=getattr(backend, "load_s", None), wall_s=time.perf_counter() - t0,
            machine=machine_info(), created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            config={**{k: str(v) for k, v in vars(config).items()}, "tasks": args.tasks, "concurrency": levels, "repeats": args.repeats, **opts},
        )
        write_report(out, report, plot)
    if args.json:
        emit_json(report)
        return 0
    console = Console(highlight=False, width=80)
    print_table(report, console, f"load: {args.tasks} tasks per level, {backend.name}:{backend.model}, in-flight cap {config.max_in_flight}")
    console.print(f"report: {out / 'report.json'}")
    return 0


LEGEND = ("t/min: tasks per minute; ×C1: against the same series at C=1; peak: most runs in flight; KV: peak "
          "KV-cache use; len, same: answer length ratio and identical answers against C=1; SoT: runs that took "
          "SoT (mean points)")


def print_table(report: dict[str, Any], console: Any, title: str) -> None:
    """Every series and level in 80 columns, numbers never cut, then auto against the better series."""
    from rich import box
    from rich.table import Table

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False, title_justify="left")
    for col in ("series", "C", "t/min", "×C1", "p50 s", "p95 s", "peak", "KV", "len", "same", "SoT"):
        table.add_column(col, justify="left" if col == "series" else "right", no_wrap=True)
    for name, rows in report["series"].items():
        for r in rows:
            table.add_row(name, str(r["concurrency"]), f(r["tasks_per_min"], ".1f"), f(r["speedup_vs_1"] or None, ".2f"),
                          f(r["p50_s"], ".2f"), f(r["p95_s"], ".2f"), str(r["peak_in_flight"]), f(r["kv_usage_peak"], ".0%"),
                          f(r["length_ratio_vs_1"] or None, ".2f"), f(r["same_answer_vs_1"], ".0%"),
                          f"{r['sot_runs']} ({r['mean_points']:.1f})" if r.get("mean_points") else str(r["sot_runs"]))
    console.print(table)
    console.print(LEGEND, style="dim")
    for c in report.get("auto_vs_best", []):
        console.print(f"auto at C={c['concurrency']}: {c['throughput_ratio']:.2f}x the best tasks/min "
                      f"({'ok' if c['throughput_ok'] else 'below'}), p50 {c['p50_ratio']:.2f}x the best "
                      f"({'ok' if c['p50_ok'] else 'above'})")
