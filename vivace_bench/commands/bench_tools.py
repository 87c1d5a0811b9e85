"""`vivace bench tools`: tool-using tasks, LangGraph's prebuilt ReAct agent against vivace's ``tools`` agent.

The measuring is ``vivace_bench.tools_bench.run_bench``; this module parses,
checks the tasks before any engine starts (a bad ``--tasks`` file is one
line, exit 2), starts the engine, keeps the report when interrupted, and
prints an 80-column table.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config

log = logging.getLogger(__name__)

CONFIG_NAMES = ("react-langgraph", "react", "plan", "plan+stream", "plan+cache", "vivace")  # tools_bench.CONFIGS
KIND_NAMES = ("parallel", "chain", "mix")  # tools_workload.KINDS; both kept here so `--help` imports no LangGraph


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("tools", parents=parents.calls_model(),
                       help="tool-using tasks: LangGraph's ReAct agent vs vivace's planned, streamed, cached tools")
    p.add_argument("--configs", nargs="+", choices=CONFIG_NAMES,
                   help="configurations (the react-langgraph baseline always runs); default: all")
    p.add_argument("--tasks", metavar="FILE",
                   help="JSONL of your own tasks against the bundled tools: {\"task\": ..., \"answer\": ...} a line "
                        "(a number, or a name the answer must contain); default: the bundled 24")
    p.add_argument("--kinds", nargs="+", choices=KIND_NAMES, help="only these kinds of task (default: all)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N tasks of each kind")
    p.add_argument("--repeats", type=int, default=1, metavar="R", help="run every task R times (default 1)")
    p.add_argument("--out", default="runs/bench-tools", metavar="DIR", help="where report.json and tools.png go")
    p.set_defaults(handler=cmd_bench_tools)


def choose_tasks(args: argparse.Namespace) -> list[Any]:
    """The tasks to run, checked before any engine starts: ``InputError`` (exit 2) for a bad file or flag."""
    from vivace.errors import InputError
    from vivace_bench.tools_workload import KINDS, load_tasks, load_user_tasks

    if (args.limit is not None and args.limit < 1) or args.repeats < 1:
        raise InputError("--limit and --repeats must be at least 1")
    if args.tasks:
        tasks = load_user_tasks(Path(args.tasks), args.kinds)
    else:
        tasks = load_tasks(tuple(args.kinds or KINDS))
    if args.limit:
        kept, per_kind = [], dict[str, int]()
        for t in tasks:
            per_kind[t.kind] = per_kind.get(t.kind, 0) + 1
            if per_kind[t.kind] <= args.limit:
                kept.append(t)
        tasks = kept
    return tasks


async def cmd_bench_tools(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console

    from vivace.assembly import open_runtime
    from vivace_bench import write_report
    from vivace_bench.backend_bench import machine_info
    from vivace_bench.tools_bench import partial, plot, run_bench
    from vivace.runtime.quant_choice import machine_key

    tasks = choose_tasks(args)
    configs = list(dict.fromkeys([CONFIG_NAMES[0], *(args.configs or CONFIG_NAMES)]))  # the baseline first
    err = Console(stderr=True)
    with err.status(f"starting the {config.backend} backend ({config.model})..."):
        runtime = await open_runtime(config, save_runs=False)
    out = Path(args.out)
    report: dict[str, Any] = {"bench": "tools", "rows": []}
    done: list[dict[str, Any]] = []  # every finished run, so an interrupted bench still reports them

    def progress(result: dict[str, Any]) -> None:
        err.print(progress_line(result), highlight=False)
        if not result.get("warmup"):
            done.append(result)

    t0 = time.perf_counter()
    try:
        err.print(f"{len(tasks)} task(s) x {len(configs)} configuration(s), after one warm-up run per reply schema "
                  "(outside every clock)", highlight=False)
        report = await run_bench(runtime, configs, tasks, config.max_tokens, args.repeats,
                                 progress=progress)
    finally:
        if not report["rows"] and done:
            report = {**partial(configs, done), "interrupted": True}
        backend = runtime.backend
        await runtime.aclose()
        report.update(backend=backend.name, model=backend.model, wall_s=round(time.perf_counter() - t0, 1),
                      machine={**machine_info(), "flags": machine_key()["flags"],
                               "load_average": [round(x, 2) for x in os.getloadavg()]},
                      created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      command="vivace bench tools " + " ".join(_argv(args)),
                      config={"max_tokens": config.max_tokens, "temperature": config.temperature,
                              "max_in_flight": config.max_in_flight, "tasks_file": args.tasks, "kinds": args.kinds,
                              "limit": args.limit, "repeats": args.repeats, "configs": configs})
        write_report(out, report, plot if report.get("rows") else None)
    if args.json:
        emit_json(report)
        return 0
    print_table(report)
    Console().print(f"report: {out / 'report.json'}")
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    """The flags this run was given, for the report (what to type to run it again)."""
    out: list[str] = []
    for flag in ("configs", "tasks", "kinds", "limit", "repeats", "max_tokens", "out"):
        value = getattr(args, flag, None)
        if value is None or (flag == "repeats" and value == 1):
            continue
        out += [f"--{flag.replace('_', '-')}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return out


def progress_line(r: dict[str, Any]) -> str:
    mark = "ok" if r["correct"] else ("ERR" if r["error"] else "--")
    return (f"  {'warm-up' if r.get('warmup') else r['id']:<7} {r['config']:<16} {r['latency_s']:6.2f} s  {mark:<3} {r['calls']} calls "
            f"{r['tool_calls']} tools {r['cache_hits']} hits  {(r['answer'] or r['error'] or '')[:40]!r}")


def print_table(report: dict[str, Any]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    console = Console(highlight=False, width=80)
    table = Table(title=f"tool-using tasks · {report.get('backend')}:{report.get('model')}",
                  padding=(0, 1), collapse_padding=True, box=box.SIMPLE_HEAD, show_edge=False)
    for col in ("config", "p50 s", "×med", "acc", "valid", "calls", "tools", "hits", "m/t/both s"):
        table.add_column(col, justify="left" if col == "config" else "right", no_wrap=True)
    for r in report.get("rows", []):
        s, per = r["split_mean_s"], r["per_task"]
        table.add_row(r["config"], f(r["p50_s"], ".1f"), f(r.get("speedup_median"), ".2f"),
                      f(r["accuracy"]["rate"], ".0%"), f(r["schema_valid_rate"], ".0%"), f(per["calls"], ".1f"),
                      f(per["tool_calls"], ".1f"), str(r["cache_hits"]),
                      f"{f(s['model_wall_s'], '.1f')}/{f(s['tool_wall_s'], '.1f')}/{f(s['overlap_s'], '.1f')}")
    console.print(table)
    console.print("×med: median per-task speedup over react-langgraph; acc: accuracy; valid: schema-valid calls; "
                  "calls, tools: per task; hits: cache hits; m/t/both: mean seconds per task in model calls, "
                  "in tools, and in both at once. p95, ratio of medians, tokens, per kind: report.json", style="dim")
