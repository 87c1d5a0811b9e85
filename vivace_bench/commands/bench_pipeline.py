"""`vivace bench pipeline`: multi-agent workloads, plain LangGraph against vivace's decisions.

The measuring is ``vivace_bench.pipeline_bench.run_bench``; this module parses,
starts the engine (with vLLM's priority scheduler, so one engine serves every
configuration: first come first served is every priority equal), keeps the
report when interrupted, and prints an 80-column table.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config
from vivace_bench import write_report
from vivace_bench.pipeline_bench import CONFIGS, WORKLOADS, check_step_model, level_name, plot, run_bench

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("pipeline", parents=parents.calls_model(),
                       help="research, map-reduce and revision workloads: plain LangGraph vs vivace, at 1 and N tasks")
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS), help="default: all three")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS),
                   help="configurations (the langgraph baseline always runs); default: all (models only with "
                        "--step-model)")
    p.add_argument("--concurrency", type=int, nargs="+", metavar="N",
                   help="tasks in flight at once; 1 is latency, more is load (default 1 8, or none with --rate)")
    p.add_argument("--rate", type=float, nargs="+", default=[], metavar="R",
                   help="open-arrival levels: tasks arrive at R per minute (Poisson, the same arrivals for every "
                        "configuration), each started on arrival")
    p.add_argument("--arrivals", type=int, default=24, metavar="N", help="tasks per open-arrival level (default 24)")
    p.add_argument("--repeats", type=int, default=1, metavar="R",
                   help="run each open-arrival level R times with other arrivals, the configurations' order rotating; "
                        "the figures pool the tasks (default 1)")
    p.add_argument("--step-model", metavar="NAME",
                   help="a [models.NAME] of the config for every step but the writers, in the models and vivace "
                        "configurations (a model per step; without it, models is not run and vivace uses one model)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N tasks per workload")
    p.add_argument("--out", default="runs/bench-pipeline", metavar="DIR", help="where report.json and pipeline.png go")
    p.set_defaults(handler=cmd_bench_pipeline)


async def cmd_bench_pipeline(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console

    from vivace.assembly import open_runtime
    from vivace.errors import InputError
    from vivace_bench.backend_bench import machine_info

    if args.concurrency is None:
        args.concurrency = [] if args.rate else [1, 8]
    if (any(c < 1 for c in args.concurrency) or (args.limit is not None and args.limit < 1) or args.arrivals < 1
            or args.repeats < 1):
        raise InputError("--concurrency values, --arrivals, --repeats and --limit must be at least 1")
    if any(not r > 0 for r in args.rate):
        raise InputError("--rate values must be above 0 tasks per minute")
    levels = list(dict.fromkeys(args.concurrency))
    if args.step_model and args.step_model not in config.model_names[1:]:
        raise InputError(f"--step-model: unknown model {args.step_model!r}; the config names "
                         f"{', '.join(config.model_names[1:]) or 'no [models.NAME]'}")
    check_step_model(args.configs or [], args.step_model)
    args.configs = args.configs or [c for c in CONFIGS if c != "models" or args.step_model]
    scheduling = "program" if config.scheduling == "fcfs" else config.scheduling  # what `scheduling` and `vivace` use
    engine_config = dataclasses.replace(config, scheduling=scheduling)  # the priority scheduler; fcfs = equal priorities
    opts: dict[str, Any] = {"max_tokens": config.max_tokens, "step_model": args.step_model}
    err = Console(stderr=True)
    with err.status(f"starting the {config.backend} backend ({config.model})..."):
        runtime = await open_runtime(engine_config, save_runs=False)
    out = Path(args.out)
    report: dict[str, Any] = {"bench": "pipeline", "levels": []}
    t0 = time.perf_counter()
    try:
        if args.step_model:  # before any clock starts: an engine start takes seconds (a compiled one, a minute)
            with err.status(f"starting the step model {args.step_model}..."):
                await runtime.models.open([args.step_model])
        report = await run_bench(
            runtime, args.configs, levels, args.workloads, args.limit, opts, rates=list(dict.fromkeys(args.rate)),
            arrivals=args.arrivals, scheduling=scheduling, history_dir=out, repeats=args.repeats,
            progress=lambda r: err.print(progress_line(r), highlight=False))
    finally:
        backend = runtime.backend
        models = [runtime.models.describe(name) for name in runtime.models.opened]  # which weights, served how
        await runtime.aclose()
        report.update(backend=backend.name, model=backend.model, models=models,
                      wall_s=round(time.perf_counter() - t0, 1),
                      machine=machine_info(), created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      config={"max_tokens": config.max_tokens, "max_in_flight": config.max_in_flight,
                              "temperature": config.temperature, "concurrency": levels, "limit": args.limit,
                              "rate": args.rate, "arrivals": args.arrivals, "repeats": args.repeats,
                              "step_model": args.step_model})
        write_report(out, report, plot if report.get("levels") else None)
    if args.json:
        emit_json(report)
        return 0
    print_table(report)
    Console().print(f"report: {out / 'report.json'}")
    return 0


def progress_line(row: dict[str, Any]) -> str:
    """One configuration's figures as a level (or one repeat of it) ends."""
    repeat = "" if row.get("repeat") is None else f"#{row['repeat'] + 1}"
    return (f"  {level_name(row):<16} {repeat:<3} {row['config']:<10} p50 {row['p50_s']:.2f} s  "
            f"p95 {row['p95_s']:.2f} s  {row['tasks_per_min']:.1f} tasks/min")


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    console = Console(highlight=False, width=80)
    for level in report["levels"]:
        table = Table(title=f"{level_name(level)} · {report.get('backend')}", width=80, padding=(0, 1),
                      show_edge=False)
        for col in ("config", "p50 s", "p95 s", "t/min", "×med", "×p95", "same", "sim", "len", "cov"):
            table.add_column(col, justify="left" if col == "config" else "right", no_wrap=True)
        for r in level["rows"]:
            table.add_row(r["config"], f(r["p50_s"], ".1f"), f(r["p95_s"], ".1f"), f(r["tasks_per_min"], ".1f"),
                          f(r.get("speedup_median"), ".2f"), f(r.get("p95_ratio"), ".2f"), f(r.get("identical"), ".0%"),
                          f(r.get("similarity"), ".2f"), f(r.get("length_ratio"), ".2f"), f(r.get("coverage"), ".2f"))
        console.print(table)
    console.print("t/min: tasks per minute; ×med: median per-task speedup over langgraph; ×p95: its p95 over this "
                  "p95; same: answers identical to langgraph's; sim: word similarity; len: length ratio; cov: "
                  "coverage of langgraph's answer (SoT configs)", style="dim")
