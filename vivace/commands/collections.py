"""`vivace collections list|drop NAME`: the retrieval store's collections."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from vivace.commands._io import Parents, Subparsers
from vivace.config import Config
from vivace.errors import InputError

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    c = sub.add_parser("collections", parents=[parents.common, parents.json], help="list or drop collections")
    c.add_argument("action", choices=("list", "drop"), nargs="?", default="list")
    c.add_argument("name", nargs="?", help="collection to drop")
    c.set_defaults(handler=cmd_collections)


def cmd_collections(args: argparse.Namespace, config: Config) -> int:
    from vivace.retrieval.store import Store

    store = Store(config)
    if args.action == "drop":
        if not args.name:
            raise InputError("vivace collections drop needs a collection NAME")
        store.drop(args.name)
        print(json.dumps({"dropped": args.name}) if args.json else f"dropped {args.name}")
        return 0
    rows = store.list()
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print(f"no collections in {config.chroma_url or config.chroma_dir}", file=sys.stderr)
    else:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['chunks']:>7} chunks  {r['embedder']}")
    return 0
