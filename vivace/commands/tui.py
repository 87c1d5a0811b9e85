"""`vivace tui`: the full-screen terminal UI; plain streaming when stdout is not a terminal.

Why the plain mode lives here: a TUI into a pipe would write escape codes
nobody reads, so the same command reads one question per input line and
streams plain text instead, with the same flags.
"""

from __future__ import annotations

import argparse
import logging
import sys

from vivace.commands._io import MODES, Parents, PlainPrinter, Subparsers, add_collection, add_compression, interruptible, summary_line
from vivace.config import Config

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("tui", parents=[parents.common, parents.model, parents.engine],
                       help="terminal UI: ask, watch SoT points grow in parallel, history")
    p.add_argument("--mode", choices=MODES, help="starting mode (F2 cycles)")
    p.add_argument("--agent", default="answer", help="starting agent (F3 cycles; default: answer, the SoT controller)")
    add_collection(p, rag_alias=True, help="starting RAG collection (F4 cycles)")
    add_compression(p, help="compression of retrieved context (F5 cycles)")
    p.add_argument("--compare", action="store_true", help="after each SoT run, measure normal decoding of the same question")
    p.set_defaults(handler=cmd_tui)


async def cmd_tui(args: argparse.Namespace, config: Config) -> int:
    from vivace.errors import InputError

    if args.compression:
        config = config.replace(compression=args.compression)
    if not sys.stdout.isatty() or not sys.stdin.isatty():
        return await _plain(args, config)
    if args.agent != "answer":
        from vivace.agents.driver import resolve

        resolve(args.agent)  # an unknown agent fails here, in one line, before the engine starts
    if args.collection is not None and len(args.collection) < 3:
        raise InputError(f"collection name must have 3 to 512 characters: {args.collection!r}")
    from rich.console import Console

    from vivace.assembly import open_runtime
    from vivace.tui.app import VivaceTUI

    with Console(stderr=True).status(f"starting the {config.backend} backend ({config.model})..."):
        runtime = await open_runtime(config)
    try:
        _log_to_file(config)
        app = VivaceTUI(runtime, agent=args.agent, mode=args.mode, rag=args.collection, compare=args.compare)
        await app.run_async()
    finally:
        await runtime.aclose()
    return 0


def _log_to_file(config: Config) -> None:
    """Textual owns the terminal (it draws through stderr): library logs go to a file under the home."""
    path = config.home / "tui" / "vivace.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)


async def _plain(args: argparse.Namespace, config: Config) -> int:
    """Not a terminal: read questions line by line from stdin and stream plain answers."""
    from rich.console import Console

    from vivace.assembly import open_runtime
    from vivace.tui.session import run_task

    err = Console(stderr=True)
    err.print("[dim]stdout is not a terminal: plain streaming, one question per input line[/dim]", highlight=False)
    runtime = await open_runtime(config)
    try:
        for line in sys.stdin:
            question = line.strip()
            if not question:
                continue
            printer = PlainPrinter(sys.stdout, err)
            trace = await interruptible(run_task(runtime, question, agent=args.agent, mode=args.mode or config.mode,
                                                 rag=args.collection, compression=config.compression, on_event=printer),
                                        runtime.backend)
            err.print(summary_line(trace), style="dim", highlight=False)
    finally:
        await runtime.aclose()
    return 0
