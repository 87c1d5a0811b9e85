"""`vivace tools list`: every tool a run may name (plug-ins and the config's MCP servers), without an engine.

Why it starts the MCP servers: a server's tools are known only by asking it,
and a server that cannot start should show up here, as the one line a run
would print, before anyone waits for an engine. Only a ToolBox is built; no
model starts.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    tools = sub.add_parser("tools", help="list tools: plug-ins and MCP servers' tools")
    tsub = tools.add_subparsers(dest="tools_command", metavar="ACTION", required=True)
    lst = tsub.add_parser("list", parents=[parents.common, parents.json],
                          help="tools, where each comes from and its parameters (starts the MCP servers, no engine)")
    lst.set_defaults(handler=cmd_list)


def parameters_summary(schema: dict[str, Any]) -> str:
    """``name: string, unit?: string``: a tool's parameters on one line (``?`` marks an optional one)."""
    props = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    parts = []
    for name, prop in props.items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        if isinstance(prop, dict) and "enum" in prop:
            kind = "|".join(str(v) for v in prop["enum"])
        elif isinstance(kind, list):
            kind = "|".join(str(k) for k in kind)
        parts.append(f"{name}{'' if name in required else '?'}: {kind or 'any'}")
    return ", ".join(parts) or "none"


async def cmd_list(args: argparse.Namespace, config: Config) -> int:
    from vivace.runtime.mcp import open_mcp
    from vivace.runtime.tools import ToolBox

    box = ToolBox()
    box.load_plugins()
    await open_mcp(config, box)  # a server that fails: one BackendError line, exit 1
    try:
        rows: list[dict[str, Any]] = [{"name": t.name, "source": t.source, "description": t.description, "pure": t.pure,
                 "timeout_s": t.timeout_s, "summary": parameters_summary(t.parameters), "parameters": t.parameters}
                for t in box.all()]
        sets, broken = box.sets(), list(box.broken)
    finally:
        await box.aclose()
    if args.json:
        emit_json({"tools": rows, "sets": sets, "skipped": [{"name": n, "error": why} for n, why in broken]})
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tools")
    for col in ("name", "source", "parameters", "description"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["source"], row["summary"], row["description"])
    Console().print(table)
    if not rows:
        Console(stderr=True).print("no tools: add [mcp.NAME] tables to vivace.toml, or install a plug-in "
                                   "(entry-point group vivace.tools)", highlight=False)
    for name, why in broken:
        Console(stderr=True).print(f"[yellow]skipped {name!r}:[/] {why}", highlight=False, markup=True)
    return 0
