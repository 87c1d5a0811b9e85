"""`vivace report`: one HTML page (and a Markdown twin) from the latest output of every `vivace bench`.

It reads report.json files and plots only; nothing here calls a model, so the
model and engine flags do not apply. The page itself is built by
``vivace_bench.report``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("report", parents=[parents.common, parents.json], help="one HTML page (and a Markdown twin) from the benches' report.json files")
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="bench output folders, or folders holding them (default: ./runs)")
    p.add_argument("--out", default="report.html", metavar="FILE", help="the HTML page; the Markdown twin goes beside it (.md)")
    p.set_defaults(handler=cmd_report)


async def cmd_report(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console

    from vivace.errors import InputError
    from vivace_bench.report import write_report_pages

    if not args.out.endswith((".html", ".htm")):
        raise InputError(f"--out must name an .html file, got {args.out!r}")
    run_dirs = [Path(d) for d in args.run_dirs] or [Path("runs")]
    html_path, md_path, runs = write_report_pages(run_dirs, Path(args.out))
    if args.json:
        emit_json({"html": str(html_path), "markdown": str(md_path), "benches": {r.bench: str(r.path) for r in runs}})
        return 0
    console = Console()
    for run in runs:
        console.print(f"  {run.bench:<10} {run.path} ({run.created})", highlight=False)
    console.print(f"report: {html_path} and {md_path}", highlight=False)
    return 0
