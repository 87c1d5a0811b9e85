"""`vivace tui`: the full-screen terminal UI; plain streaming when stdout is not a terminal.

Why the plain mode lives here: a TUI into a pipe would write escape codes
nobody reads, so the same command reads one question per input line and
streams plain text instead, with the same flags. A batch outlives its bad
lines: undecodable bytes are replaced and a failing question is reported in
one line while the next one is answered.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Iterable, Iterator, TextIO

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
    p.add_argument("--thread", metavar="ID", help="a conversation: earlier turns of thread ID reach the model, and each "
                                                  "answer becomes its next turn")
    p.set_defaults(handler=cmd_tui)


async def cmd_tui(args: argparse.Namespace, config: Config) -> int:
    if args.compression:
        config = config.replace(compression=args.compression)
    if args.agent != "answer":
        from vivace.agents.driver import resolve

        resolve(args.agent)  # an unknown agent fails here, in one line, before the engine starts
    if args.collection is not None:
        from vivace.retrieval.inputs import check_collection_name

        check_collection_name(args.collection)
    if not sys.stdout.isatty() or not sys.stdin.isatty():
        return await _plain(args, config)
    from rich.console import Console

    from vivace.assembly import open_runtime
    from vivace.tui.app import VivaceTUI

    with Console(stderr=True).status(f"starting the {config.backend} backend ({config.model})..."):
        runtime = await open_runtime(config)
    try:
        _log_to_file(config)
        app = VivaceTUI(runtime, agent=args.agent, mode=args.mode, rag=args.collection, compare=args.compare,
                        thread=args.thread)
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


def _questions(stream: TextIO) -> Iterator[tuple[int, str, bool]]:
    """``(line number, question, had undecodable bytes)`` per non-blank input line.

    Bytes are decoded here, with replacement: one undecodable byte must not
    raise out of the loop (strict locales) or reach the model as a lone
    surrogate (``surrogateescape``) and sink the rest of the batch.
    """
    raw: Iterable[bytes | str] = getattr(stream, "buffer", None) or stream
    encoding = getattr(stream, "encoding", None) or "utf-8"
    for number, line in enumerate(raw, 1):
        if isinstance(line, bytes):
            try:
                text, bad = line.decode(encoding), False
            except UnicodeDecodeError:
                text, bad = line.decode(encoding, "replace"), True
        else:  # a text stream with no bytes below it (an embedding app, a test)
            text, bad = line, False
        if text.strip():
            yield number, text.strip(), bad


async def _plain(args: argparse.Namespace, config: Config) -> int:
    """Not a terminal: one question per input line, streamed plain; a failing question does not stop the batch.

    Each failure prints one ``error:`` line and the next line is answered; the
    run driver records every run in runs.jsonl, failed ones included. The exit
    code is 0 if all went well, else 2 when every failure was bad input, else 1.
    """
    from rich.console import Console

    from vivace.assembly import open_runtime
    from vivace.errors import VivaceError
    from vivace.tui.session import run_task

    err = Console(stderr=True)
    err.print("[dim]stdout is not a terminal: plain streaming, one question per input line[/dim]", highlight=False)
    runtime = await open_runtime(config)
    failed: list[int] = []
    asked = 0
    try:
        for number, question, bad in _questions(sys.stdin):
            asked += 1
            if bad:
                _line(f"warning: line {number}: bytes that are not {sys.stdin.encoding or 'UTF-8'} replaced by U+FFFD")
            printer = PlainPrinter(sys.stdout, err)
            try:
                trace = await interruptible(run_task(runtime, question, agent=args.agent, mode=args.mode or config.mode,
                                                     rag=args.collection, compression=config.compression, on_event=printer,
                                                     thread=args.thread),
                                            runtime.backend)
            except VivaceError as exc:  # recorded by the run driver; say so in one line and go on
                failed.append(exc.exit_code)
                _line(f"error: line {number}: {exc}")
                continue
            err.print(summary_line(trace), style="dim", highlight=False)
    finally:
        await runtime.aclose()
    if not failed:
        return 0
    _line(f"{len(failed)} of {asked} questions failed; every run is in {config.runs_dir / 'runs.jsonl'}")
    return 2 if all(code == 2 for code in failed) else 1


def _line(text: str) -> None:
    """One unwrapped line on stderr, after what stdout has so far."""
    sys.stdout.flush()
    print(text, file=sys.stderr, flush=True)
