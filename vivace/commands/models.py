"""`vivace models prepare|list`."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from vivace.cli import emit_json
from vivace.config import Config
from vivace.runtime import models


def cmd_prepare(args: argparse.Namespace, config: Config) -> int:
    console = Console(stderr=True)
    with console.status("preparing the embedded model (first time only, about a minute)..."):
        path = models.prepare(models.EMBEDDED, config.home, force=args.force)
    if args.json:
        emit_json({"model": models.EMBEDDED.name, "path": str(path), "missing": models.missing_parts(path)})
    else:
        Console().print(f"{models.EMBEDDED.name}: ready at {path}")
    return 0


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    rows = models.list_models(config.home)
    if args.json:
        emit_json({"models": rows})
        return 0
    table = Table(title=f"models under {models.models_dir(config.home)}")
    for column in ("name", "status", "path", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["status"], row["path"], row["description"])
    Console().print(table)
    return 0
