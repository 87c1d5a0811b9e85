"""`vivace tui`: the full-screen terminal UI; plain streaming when stdout is not a terminal."""

from __future__ import annotations

import argparse
import sys

from vivace.config import Config


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tui", parents=parents, help="terminal UI: ask, watch SoT points grow in parallel, history")
    p.add_argument("--mode", choices=("auto", "sot", "normal"), help="starting mode (F2 cycles)")
    p.add_argument("--agent", default="answer", help="starting agent (F3 cycles; default: answer, the SoT controller)")
    p.add_argument("--rag", metavar="COLLECTION", help="starting RAG collection (F4 cycles)")
    p.add_argument("--compression", choices=("off", "auto", "always"), help="compression of retrieved context (F5 cycles)")
    p.add_argument("--compare", action="store_true", help="after each SoT run, measure normal decoding of the same question")
    p.set_defaults(handler=cmd_tui)


async def cmd_tui(args: argparse.Namespace, config: Config) -> int:
    from vivace.errors import InputError

    if args.compression:
        config = config.replace(compression=args.compression)
    if not sys.stdout.isatty() or not sys.stdin.isatty():
        return await _plain(args, config)
    if args.agent != "answer":
        from vivace.agents.runner import resolve

        resolve(args.agent)  # an unknown agent fails here, in one line, before the engine starts
    if args.rag is not None and len(args.rag) < 3:
        raise InputError(f"collection name must have 3 to 512 characters: {args.rag!r}")
    from rich.console import Console

    from vivace.assembly import open_runtime
    from vivace.tui.app import VivaceTUI

    with Console(stderr=True).status(f"starting the {config.backend} backend ({config.model})..."):
        runtime = await open_runtime(config)
    try:
        _log_to_file(config)
        app = VivaceTUI(runtime, agent=args.agent, mode=args.mode, rag=args.rag, compare=args.compare)
        await app.run_async()
    finally:
        await runtime.aclose()
    return 0


def _log_to_file(config: Config) -> None:
    """Textual owns the terminal (it draws through stderr): library logs go to a file under the home."""
    import logging

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

    from vivace.commands import interruptible
    from vivace.commands.ask import PlainPrinter, summary_line
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
                                                 rag=args.rag, compression=config.compression, on_event=printer),
                                        runtime.backend)
            err.print(summary_line(trace), style="dim", highlight=False)
    finally:
        await runtime.aclose()
    return 0
