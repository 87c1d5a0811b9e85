"""MCP tool sets: every ``[mcp.NAME]`` server of the config, started once per runtime, its tools as ``NAME.TOOL``.

Why a task per server: the SDK's transports and ``ClientSession`` hold anyio
task groups and cancel scopes, which must be entered and exited by the same
task. A runtime is closed from wherever ``Runtime.aclose`` runs, so each
server gets a task of its own that enters the transport and the session,
waits until it is told to stop, and leaves them itself. Tool calls from any
task go through the session meanwhile.

A server that fails to start is one ``BackendError`` line naming it (the ones
already started are closed); a server that dies mid-run fails the calls that
reach it, which the tool path turns into those calls' error results. A stdio
server's stderr goes to ``$VIVACE_HOME/logs/mcp-NAME.log``, not the terminal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO, cast

import anyio

from vivace.config import Config
from vivace.errors import BackendError, VivaceError
from vivace.runtime.tools import Tool, ToolBox

log = logging.getLogger(__name__)


class McpToolError(Exception):
    """A tool's error result (``isError``): the message is the server's text, for the model to read."""


class _Server:
    """One configured server: the task that owns its connection, and the session tool calls use."""

    def __init__(self, name: str, table: dict[str, Any], home: Path) -> None:
        self.name, self.table = name, table
        self.session: Any = None  # mcp.ClientSession while connected
        self.ended: str | None = None  # why the connection ended, once it has
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self._errlog: TextIO | None
        self.log_path: Path | None
        self._errlog, self.log_path, self._log_start = _open_log(home, name) if "command" in table else (None, None, 0)

    def start(self) -> "asyncio.Future[list[Any]]":
        """Start connecting; the future gives the server's tools (``mcp.types.Tool``) or the failure."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"mcp:{self.name}")
        return self._ready

    async def _run(self) -> None:
        """Owns the transport and the session from entry to exit, in this one task (anyio's rule)."""
        from mcp import ClientSession

        scope = anyio.CancelScope(deadline=anyio.current_time() + self.table["startup_timeout_s"])
        try:
            with scope:
                async with AsyncExitStack() as stack:
                    read, write = await stack.enter_async_context(self._transport())
                    session = await stack.enter_async_context(ClientSession(read, write))
                    await session.initialize()
                    listed = await _list_tools(session)
                    scope.deadline = math.inf  # started: the startup timeout no longer applies
                    self.session = session
                    self._ready.set_result(listed)
                    await self._stop.wait()
            if scope.cancelled_caught and not self._ready.done():
                raise TimeoutError(f"no MCP handshake within {self.table['startup_timeout_s']:g} s")
            self.ended = "closed"
        except BaseException as exc:  # noqa: BLE001 - a server's failure is its own, never the caller's task's
            self.ended = _reason(exc, self.table)
            if not self._ready.done():
                self._ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError(self.ended))
            elif not self._stop.is_set():
                log.warning("mcp server %r stopped: %s", self.name, self.ended)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self.session = None
            if self._errlog is not None:
                self._errlog.close()

    def _transport(self) -> Any:
        if "url" in self.table:
            from mcp.client.streamable_http import streamable_http_client

            return streamable_http_client(self.table["url"])
        from mcp import StdioServerParameters, stdio_client

        cwd = self.table.get("cwd")
        params = StdioServerParameters(command=self.table["command"], args=self.table.get("args", []),
                                       env=self.table.get("env"), cwd=os.path.expanduser(cwd) if cwd else None)
        return stdio_client(params, errlog=cast(TextIO, self._errlog))  # opened in __init__ for a "command" server

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """The tool's result: structured content when the server gives it, else its text; ``isError`` raises."""
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        session = self.session
        if session is None:
            raise ConnectionError(f"mcp server {self.name!r} is not running ({self.ended or 'not started'})"
                                  + self.stderr_hint())
        try:
            result = await session.call_tool(tool, arguments)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                raise ConnectionError(f"mcp server {self.name!r} closed the connection{self.stderr_hint()}") from None
            raise
        if result.is_error:
            raise McpToolError(_text(result.content) or "the tool reported an error without a message")
        if result.structured_content is not None:
            return result.structured_content
        return _text(result.content)

    def stderr_hint(self) -> str:
        """The server's last stderr line since it started, for an error message (stdio servers)."""
        if self.log_path is None:
            return ""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_start)
                lines = [ln.strip() for ln in f.read()[-4096:].decode("utf-8", "replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return f" (its stderr: {lines[-1][:200]})" if lines else ""

    async def close(self) -> None:
        """Tell the owning task to leave the session and the transport, and wait until it has."""
        self._stop.set()
        if self._task is not None:
            await asyncio.wait({self._task})  # never raises: the task keeps its own failures


def _open_log(home: Path, name: str) -> tuple[TextIO, Path | None, int]:
    """Where a stdio server's stderr goes: a log file under the home (else /dev/null), never the terminal."""
    path = home / "logs" / f"mcp-{name}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        out = path.open("a", encoding="utf-8")
        out.write(f"--- vivace started mcp server {name!r} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        out.flush()
        return out, path, out.tell()
    except OSError as exc:
        log.debug("mcp server %r: cannot write %s (%s); its stderr is discarded", name, path, exc)
        return open(os.devnull, "w", encoding="utf-8"), None, 0


async def _list_tools(session: Any) -> list[Any]:
    """All the server's tools, page by page."""
    from mcp_types import PaginatedRequestParams

    tools, cursor = [], None
    while True:
        page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _text(content: list[Any]) -> str:
    """The text parts of a result, joined; other parts (images, resources) are named, not inlined."""
    parts = [getattr(c, "text", None) if getattr(c, "type", "") == "text" else f"[{getattr(c, 'type', 'part')}]"
             for c in content]
    return "\n".join(p for p in parts if p)


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside anyio's task-group exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _reason(exc: BaseException, table: dict[str, Any]) -> str:
    """Why a server did not start (or stopped), as a phrase for one line."""
    from mcp import MCPError

    leaf = _leaf(exc)
    if isinstance(leaf, FileNotFoundError) and "command" in table:
        return f"command not found: {table['command']}"
    if isinstance(leaf, PermissionError) and "command" in table:
        return f"cannot run {table['command']}: permission denied"
    if isinstance(leaf, MCPError) and "closed" in leaf.message.lower():
        return "it exited or closed the connection during the MCP handshake"
    if isinstance(leaf, TimeoutError):
        return str(leaf) or f"no MCP handshake within {table.get('startup_timeout_s', 0):g} s"
    if "url" in table and type(leaf).__name__ in ("ConnectError", "ConnectTimeout"):
        return f"cannot connect to {table['url']}: {leaf}"
    text = str(leaf).strip().splitlines()[0][:200] if str(leaf).strip() else ""
    return f"{type(leaf).__name__}: {text}" if text else type(leaf).__name__


def _tools_for(server: _Server, listed: list[Any], box: ToolBox) -> list[Tool]:
    """The server's tools as ``NAME.TOOL``, after the table's allow-list; a name the table asks for and the
    server lacks is a start failure (the config is wrong, and the run would fail later anyway). A tool whose
    name vivace cannot take is skipped and listed in ``box.broken``."""
    table, have = server.table, [t.name for t in listed]
    wanted = table.get("tools")
    for key, names in (("tools", wanted or []), ("pure", table.get("pure", [])),
                       ("requires_approval", table.get("requires_approval", []))):
        if missing := [n for n in names if n not in have]:
            raise BackendError(f"mcp server {server.name!r}: mcp.{server.name}.{key} names {', '.join(missing)}, "
                               f"which it does not have (it has: {', '.join(have) or 'no tools'})")
    out: list[Tool] = []
    for item in listed:
        if wanted is not None and item.name not in wanted:
            continue
        try:
            out.append(_as_tool(server, item))
        except VivaceError as exc:
            box.broken.append((f"{server.name}.{item.name}", str(exc)))
            log.warning("mcp server %r: skipped tool %r: %s", server.name, item.name, exc)
    return out


def _as_tool(server: _Server, item: Any) -> Tool:
    remote = item.name

    async def fn(**arguments: Any) -> Any:
        return await server.call(remote, arguments)

    schema = dict(item.input_schema or {"type": "object"})
    schema.pop("title", None)
    description = (item.description or item.title or remote).strip()
    return Tool(f"{server.name}.{remote}", description, schema, fn, pure=remote in server.table.get("pure", []),
                timeout_s=server.table["timeout_s"], source=f"mcp:{server.name}",
                requires_approval=remote in server.table.get("requires_approval", []))


async def open_mcp(config: Config, box: ToolBox) -> None:
    """Start every ``[mcp.NAME]`` server, add its tools to ``box`` (and its name as a set), close it with the box.

    Servers start concurrently. If one fails, the others are closed and the
    error is one ``BackendError`` line naming the first that failed (in the
    config's order).
    """
    if not config.mcp:
        return
    servers = [_Server(name, table, config.home) for name, table in config.mcp.items()]
    futures = [s.start() for s in servers]
    try:
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = next(((s, r) for s, r in zip(servers, results) if isinstance(r, BaseException)), None)
        if failed is not None:
            server, exc = failed
            raise BackendError(f"mcp server {server.name!r} failed to start: {_reason(exc, server.table)}"
                               + server.stderr_hint())
        # none failed: every result is a tool list
        made = [(s, _tools_for(s, cast(list[Any], listed), box)) for s, listed in zip(servers, results)]
        for server, tools in made:
            added = []
            for item in tools:
                if item.name in box:
                    box.broken.append((item.name, f"skipped: the name is taken ({box.get(item.name).source})"))
                    continue
                added.append(box.add(item).name)
            box.add_set(server.name, added)
            log.debug("mcp server %r: %d tool(s)", server.name, len(added))
    except BaseException as exc:
        await asyncio.gather(*(s.close() for s in servers))
        if isinstance(exc, VivaceError) or not isinstance(exc, Exception):
            raise
        raise BackendError(f"mcp servers failed to start: {_reason(exc, {})}") from exc
    for server in servers:
        box.on_close(server.close)
