"""`vivace bench router`: the SoT router's precision, recall and decision time on a labelled set.

The measuring is ``vivace_bench.router_bench.run_bench``; this module parses,
prints tables that fit 80 columns, and writes report.json. No engine starts:
the router needs none.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config
from vivace_bench import write_report

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("router", parents=[parents.common, parents.json],
                       help="the SoT router's precision/recall and decision time on a labelled set")
    p.add_argument("--questions", metavar="FILE.tsv",
                   help="label<TAB>category<TAB>question per line (default: the bundled held-out set)")
    p.add_argument("--repeats", type=int, default=3, help="timing passes over the set (default 3)")
    p.add_argument("--out", default="runs/bench-router", metavar="DIR", help="where report.json goes")
    p.set_defaults(handler=cmd_bench_router)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


async def cmd_bench_router(args: argparse.Namespace, config: Config) -> int:
    import asyncio

    from vivace_bench.router_bench import load_labelled, run_bench

    items, source = load_labelled(Path(args.questions) if args.questions else None)
    report = await asyncio.to_thread(run_bench, items, source, repeats=args.repeats)
    out = Path(args.out)
    write_report(out, report)
    if args.json:
        emit_json(report)
        return 0
    _print(report, out)
    return 0


def _print(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=min(Console().width, 80))
    labels = Table(title=f"router on {Path(report['questions']).name} ({report['n']} questions)")
    for col in ("label", "n", "routed", "precision", "recall"):
        labels.add_column(col, justify="right")
    for name, m in report["labels"].items():
        labels.add_row(name, str(m["n"]), str(m["routed"]), _fmt(m["precision"]), _fmt(m["recall"]))
    console.print(labels)
    cats = Table(title="per category: where its questions went")
    for col in ("category", "label", "n", "-> sot", "-> normal"):
        cats.add_column(col, justify="right")
    for name, c in report["by_category"].items():
        cats.add_row(name, c["label"], str(c["n"]), str(c["sot"]), str(c["normal"]))
    console.print(cats)
    if report["misrouted"]:
        console.print(f"misrouted ({len(report['misrouted'])}):", highlight=False)
        for m in report["misrouted"]:
            line = f"  {m['label']}->{m['routed']} {m['category']}: {m['question']}"
            console.print(line if len(line) <= 78 else line[:75] + "...", highlight=False, markup=False)
    d = report["decision_ms"]
    console.print(
        f"accuracy {_fmt(report['accuracy'])}; math/coding/writing/reasoning/estimate to SoT: "
        f"{report['unsuited_to_sot']}/{report['unsuited_n']} (target 0)\n"
        f"decision {_fmt(d['median'], 3)} ms median, {_fmt(d['p95'], 3)} ms p95 over {d['n']} "
        f"(target < {d['target']:g} ms)\n"
        f"first load {report['load_s']:.2f} s; load average {report['machine']['load_average_start'][0]}",
        highlight=False,
    )
    if report["in_examples"]:
        console.print(f"note: {report['in_examples']} of these questions are among the router's own examples",
                      highlight=False)
    console.print(f"report: {out / 'report.json'}", highlight=False)
