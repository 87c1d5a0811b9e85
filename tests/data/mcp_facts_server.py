"""A small real MCP server for the tests (mcp 2.x ``MCPServer``), over stdio or streamable HTTP.

Run ``python mcp_facts_server.py`` for stdio, ``python mcp_facts_server.py --http PORT`` for
streamable HTTP on 127.0.0.1. ``die`` ends the process at once, as a crashed server does.
"""

from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

FACTS = {"alpha": "Alpha is 4000 m high.", "beta": "Beta is 5000 m high."}

server = MCPServer("facts")


@server.tool()
def lookup(name: str) -> str:
    """Look up a fact about a mountain by name."""
    if name.lower() not in FACTS:
        raise ToolError(f"no fact about {name!r}")
    return FACTS[name.lower()]


@server.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@server.tool()
def fail() -> str:
    """Always fails, with a message the caller should see."""
    raise ToolError("the facts database is locked")


@server.tool()
def die() -> str:
    """End the server process at once (a crash mid-run)."""
    sys.stderr.write("facts server: dying on request\n")
    sys.stderr.flush()
    os._exit(3)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        print("facts server: starting on stdio", file=sys.stderr, flush=True)
        server.run()
