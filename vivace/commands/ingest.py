"""`vivace ingest PATH... --collection NAME`: chunk and embed text files into a collection.

The embedder is the retrieval store's own (config ``embedder``), not the chat
model, so the model and engine flags do not apply. Errors are ``VivaceError``s,
so the CLI prints one line.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from vivace.commands._io import Parents, Subparsers
from vivace.config import Config
from vivace.errors import InputError

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("ingest", parents=[parents.common, parents.json], help="chunk and embed text/markdown files into a collection")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (folders: .txt .md .markdown .rst)")
    p.add_argument("--collection", "-c", required=True, help="collection name (3-512 characters)")
    p.add_argument("--chunk-tokens", type=int, default=None, help="chunk size in tokens (config chunk_tokens)")
    p.add_argument("--overlap", type=int, default=None, help="overlap in tokens (config chunk_overlap)")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="metadata on every chunk, for filters")
    p.set_defaults(handler=cmd_ingest)


def _tags(values: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--tag wants KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


def cmd_ingest(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from vivace.retrieval.store import Store

    if args.chunk_tokens is not None and args.chunk_tokens < 8:
        raise InputError("--chunk-tokens must be at least 8")
    if args.overlap is not None and args.overlap < 0:
        raise InputError("--overlap must not be negative")
    store = Store(config)
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]embedding[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=not console.is_terminal, disable=bool(args.json),
    ) as progress:
        task = progress.add_task("embed", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=max(total, 1))

        report = store.ingest(
            args.paths, args.collection, args.chunk_tokens, args.overlap, _tags(args.tag), on_progress
        )
    for path, why in report.skipped:
        console.print(f"[yellow]skipped[/] {path}: {why}")
    if args.json:
        print(json.dumps(report.__dict__))
    else:
        print(
            f"{report.collection}: {report.files} files, {report.chunks} chunks "
            f"({report.added} new, {report.removed} removed, {len(report.skipped)} skipped) in {report.seconds:.1f} s"
        )
    return 0
