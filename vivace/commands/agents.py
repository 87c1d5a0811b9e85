"""`vivace agents list`: built-in agents and plug-ins, with where each comes from, and the plug-ins that failed to load."""

from __future__ import annotations

import argparse
import logging

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    agents = sub.add_parser("agents", help="list agents: built-in, plug-ins, and skipped plug-ins")
    asub = agents.add_subparsers(dest="agents_command", metavar="ACTION", required=True)
    lst = asub.add_parser("list", parents=[parents.common, parents.json], help="agents and where each comes from")
    lst.set_defaults(handler=cmd_list)


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console
    from rich.table import Table

    from vivace.agents.registry import REGISTRY

    entries = REGISTRY.entries()
    if args.json:
        emit_json({"agents": [e.to_dict() for e in entries],
                   "skipped": [{"entry_point": n, "error": why} for n, why in REGISTRY.broken]})
        return 0
    table = Table(title="agents")
    for col in ("name", "source", "description"):
        table.add_column(col)
    for e in entries:
        table.add_row(e.agent.name, e.source, e.agent.description)
    Console().print(table)
    for name, why in REGISTRY.broken:
        Console(stderr=True).print(f"[yellow]skipped plug-in {name!r}:[/] {why}", highlight=False)
    return 0
