"""The one tool path: every tool call in vivace is ``ToolPath.__call__``, beside the model call path.

Why one place: the allow-list, argument validation, timeout, the per-tool
concurrency cap, the cache for pure tools, output limits and the record
(``ToolTrace``) must hold the same way for the ``tools`` agent, a ReAct loop,
a plug-in agent and the benches. A tool's failure (it raises, hangs past its
timeout, returns something that is not JSON, gets arguments that break its
schema, or does not exist) becomes the tool's result for the model, with
``error`` set in the record: it never crashes the run, and every call id gets
an answer. Only a cancellation (the run stopped) goes through.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Collection

from pydantic_core import to_jsonable_python

from vivace.runtime.tools import ArgumentsInvalid, Tool, ToolBox
from vivace.trace import ToolTrace

log = logging.getLogger(__name__)

MAX_OUTPUT_CHARS = 4000  # what a model reads of one result; the rest is cut, and the result says so


@dataclass
class ToolCall:
    """A call as a model (or an agent) asks for it; ``arguments`` may still be JSON text."""

    name: str
    arguments: Any = field(default_factory=dict)
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:12]}")


@dataclass
class ToolOutcome:
    """What came back: ``content`` is what the model reads (the result, or the error)."""

    call_id: str
    name: str
    content: str
    value: Any = None
    error: str | None = None
    trace: ToolTrace | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ToolScope:
    """Where a call happens and who hears about it (the run's tracer), for the record and the live view."""

    agent: str = ""
    node: str = ""
    branch: int | None = None
    started: Callable[[ToolCall], None] | None = None
    record: Callable[[ToolTrace], None] | None = None
    cache: bool = True  # False: pure tools run anyway (a bench's configuration without the cache)
    # Asked before a tool that requires approval runs (the run's journal); None: nobody can approve, it is refused
    approve: Callable[[Tool, ToolCall], Awaitable[bool]] | None = None


class ToolPath:
    """Allow-list, validation, cap, cache, timeout, one record: the only place vivace runs a tool."""

    def __init__(self, box: ToolBox, max_output_chars: int = MAX_OUTPUT_CHARS) -> None:
        self.box = box
        self.max_output_chars = max_output_chars
        self._caps: dict[str, asyncio.Semaphore] = {}
        self._cache: dict[tuple[str, str], asyncio.Future[Any]] = {}  # pure tools: a result, or the call in flight
        self.hits = 0

    def clear_cache(self) -> None:
        self._cache.clear()

    async def __call__(self, call: ToolCall, allowed: Collection[str] | None = None,
                       scope: ToolScope | None = None) -> ToolOutcome:
        scope = scope or ToolScope()
        if scope.started is not None:
            scope.started(call)
        started, t0 = time.time(), time.perf_counter()
        tool: Tool | None = None
        hit, value, error = False, None, None
        arguments = call.arguments
        try:
            tool = self._allowed(call.name, allowed)
            arguments = _arguments(call.arguments)
            checked = tool.validate(arguments)
            if tool.requires_approval:  # after validation: a person is asked only about a call that could run
                if scope.approve is None or not await scope.approve(tool, call):
                    raise _Refused("not approved")
                started, t0 = time.time(), time.perf_counter()  # the person's time is not the tool's
            value, hit = await self._run(tool, checked, scope.cache)
        except asyncio.CancelledError:
            raise
        except _Refused as exc:
            error = str(exc)
        except ArgumentsInvalid as exc:
            error = f"invalid arguments for {call.name}: {exc}"
        except TimeoutError:
            error = f"{call.name} timed out after {tool.timeout_s if tool else 0:g} s"
        except Exception as exc:  # noqa: BLE001 - the tool's own failure is its result, for the model to read
            error = f"{call.name} failed: {type(exc).__name__}: {str(exc)[:300]}".rstrip(": ")
        content, truncated = "", False
        if error is None:
            try:
                content, truncated = self._content(value)
            except _Refused as exc:
                error = str(exc)
        if error is not None:
            content = f"error: {error}"
            log.debug("tool %s: %s", call.name, error)  # in the record and the run's events; not a log line each
        trace = ToolTrace(
            name=call.name, call_id=call.id, arguments=arguments, started_at=started,
            ended_at=started + (seconds := time.perf_counter() - t0), seconds=round(seconds, 6), cache_hit=hit,
            error=error, output_chars=len(content), truncated=truncated, source=tool.source if tool else "",
            agent=scope.agent, node=scope.node, branch=scope.branch,
        )
        if scope.record is not None:
            scope.record(trace)
        return ToolOutcome(call.id, call.name, content, None if error else value, error, trace)

    def _allowed(self, name: str, allowed: Collection[str] | None) -> Tool:
        names = self.box.names() if allowed is None else sorted(allowed)
        if name not in names or name not in self.box:
            raise _Refused(f"there is no tool {name!r}; the tools are: {', '.join(names) or 'none'}")
        return self.box.get(name)

    async def _run(self, tool: Tool, arguments: dict[str, Any], cache: bool = True) -> tuple[Any, bool]:
        """The result, and whether it came from the cache (pure tools: the same arguments run once)."""
        if not tool.pure or not cache:
            return await self._capped(tool, arguments), False
        key = (tool.name, json.dumps(to_jsonable_python(arguments, fallback=repr), sort_keys=True))
        known = self._cache.get(key)
        if known is not None:
            self.hits += 1
            return await asyncio.shield(known), True
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._cache[key] = future
        try:
            value = await self._capped(tool, arguments)
        except BaseException as exc:
            self._cache.pop(key, None)  # a failure is not remembered: the next call tries again
            if not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        future.set_result(value)
        return value, False

    async def _capped(self, tool: Tool, arguments: dict[str, Any]) -> Any:
        cap = self._caps.get(tool.name)
        if cap is None and tool.max_concurrency:
            cap = self._caps[tool.name] = asyncio.Semaphore(tool.max_concurrency)
        async with asyncio.timeout(tool.timeout_s):  # the wait for a slot counts: the caller waits either way
            if cap is None:
                return await tool.invoke(arguments)
            async with cap:
                return await tool.invoke(arguments)

    def _content(self, value: Any) -> tuple[str, bool]:
        if isinstance(value, str):
            text = value
        else:
            try:
                text = json.dumps(to_jsonable_python(value), ensure_ascii=False)
            except Exception as exc:  # noqa: BLE001 - pydantic's serializer raises its own error type
                raise _Refused(f"the result ({type(value).__name__}) is not JSON-serialisable: {exc}"[:300]) from None
        if len(text) <= self.max_output_chars:
            return text, False
        return f"{text[: self.max_output_chars]}\n[truncated: {self.max_output_chars} of {len(text)} characters]", True


class _Refused(Exception):
    """A call the path will not run as asked: the message is the tool's result."""


def _arguments(arguments: Any) -> Any:
    """Arguments as a JSON object: models send them as JSON text, code as a dict."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            raise ArgumentsInvalid(f"arguments are not JSON ({exc})") from None
    return arguments
