"""`vivace ingest PATH... --collection NAME`: chunk and embed text files into a collection.

The embedder is the retrieval store's own (config ``embedder``), not the chat
model, so the model and engine flags do not apply. Errors are ``VivaceError``s,
so the CLI prints one line. Flags, the collection name and the paths are
checked before the store opens or the embedder loads: bad input costs
milliseconds, exit 2.
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
    p.add_argument("--collection", "-c", required=True,
                   help="collection name: 3-512 characters from [a-zA-Z0-9._-], starting and ending with a letter or digit")
    p.add_argument("--chunk-tokens", type=int, default=None, help="chunk size in tokens (config chunk_tokens)")
    p.add_argument("--overlap", type=int, default=None, help="overlap in tokens (config chunk_overlap)")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="metadata on every chunk, for filters")
    p.add_argument("--sync", action="store_true",
                   help="also remove the chunks of files under the given folders that are gone (deleted, renamed, now skipped)")
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
    from vivace.retrieval.inputs import check_collection_name, check_paths

    if args.chunk_tokens is not None and args.chunk_tokens < 8:
        raise InputError("--chunk-tokens must be at least 8")
    if args.overlap is not None and args.overlap < 0:
        raise InputError("--overlap must not be negative")
    tags = _tags(args.tag)
    check_collection_name(args.collection)
    paths = check_paths(args.paths)  # before the store opens and the embedder loads (seconds)

    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from vivace.retrieval.store import Store

    store = Store(config)
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]embedding[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=not console.is_terminal, disable=bool(args.json),
    ) as progress:
        task = progress.add_task("embed", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=max(total, 1))

        report = store.ingest(paths, args.collection, args.chunk_tokens, args.overlap, tags, on_progress, sync=args.sync)
    for path, why in report.skipped:
        console.print(f"[yellow]skipped[/] {escape(path)}: {escape(why)}", highlight=False)
    if args.json:
        print(json.dumps(report.__dict__))
    else:
        pruned = f", {report.pruned} pruned ({len(report.pruned_sources)} files gone)" if args.sync else ""
        print(
            f"{report.collection}: {report.files} files, {report.chunks} chunks "
            f"({report.added} new, {report.removed} removed{pruned}, {len(report.skipped)} skipped) in {report.seconds:.1f} s"
        )
    return 0
