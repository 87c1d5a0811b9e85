"""Tools: typed Python functions (``@tool``), MCP tool sets and plug-ins, registered once per runtime.

Why a runtime part, like a model: a tool is shared by every agent and run of a
process (its concurrency cap, its result cache, an MCP server's one
connection), and an agent or a pipeline step only names the tools it may use.
Calls go through the one tool path (``vivace.runtime.tool_path``).

A tool's JSON schema comes from its type hints (pydantic), its description
from its docstring (the first paragraph; an ``Args:`` section describes the
parameters). Plug-ins ship tools under the entry-point group ``vivace.tools``;
they load once, and a broken one is logged and skipped.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from vivace.errors import InputError
from vivace.plugins import load_group

log = logging.getLogger(__name__)

GROUP = "vivace.tools"
DEFAULT_TIMEOUT_S = 30.0
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


class ArgumentsInvalid(ValueError):
    """Arguments that fail the tool's schema; the message names the field, for the model to fix."""


@dataclass
class Tool:
    """One callable tool. ``fn`` takes the validated arguments as keywords; sync functions run in a thread.

    ``pure`` tools (same arguments, same result, no side effects) are cached by
    (name, arguments); ``max_concurrency`` caps its calls in flight across the
    process; ``timeout_s`` bounds each call. A call of a tool that
    ``requires_approval`` waits for a person's yes (the run pauses at its checkpoint).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    pure: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_concurrency: int | None = None
    source: str = "python"
    args_model: type[BaseModel] | None = field(default=None, repr=False)
    requires_approval: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InputError(f"tool name {self.name!r}: letters, digits, '_', '.' or '-' (at most 64), not first a digit")
        if self.timeout_s <= 0:
            raise InputError(f"tool {self.name!r}: timeout_s must be positive")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise InputError(f"tool {self.name!r}: max_concurrency must be at least 1")

    def spec(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry: what a model is told about this tool."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def validate(self, arguments: Any) -> dict[str, Any]:
        """The arguments as the function takes them, or ``ArgumentsInvalid`` naming the first bad field."""
        if not isinstance(arguments, dict):
            raise ArgumentsInvalid(f"arguments must be a JSON object, got {type(arguments).__name__}")
        if self.args_model is not None:
            try:
                model = self.args_model.model_validate(arguments)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first.get("loc", ())) or "arguments"
                raise ArgumentsInvalid(f"{where}: {first.get('msg', 'invalid')}") from None
            return {name: getattr(model, name) for name in type(model).model_fields}
        import jsonschema

        try:
            jsonschema.validate(arguments, self.parameters)
        except jsonschema.ValidationError as exc:
            where = ".".join(str(p) for p in exc.absolute_path) or "arguments"
            raise ArgumentsInvalid(f"{where}: {exc.message[:200]}") from None
        return arguments

    async def invoke(self, arguments: dict[str, Any]) -> Any:
        """Call the function with already validated arguments (the tool path adds timeout, cap and cache)."""
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**arguments)
        result = await asyncio.to_thread(self.fn, **arguments)
        return await result if inspect.isawaitable(result) else result


def _doc_parts(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The docstring's first paragraph, and per-parameter text from an ``Args:`` section."""
    doc = inspect.getdoc(fn) or ""
    head = doc.split("\n\n", 1)[0].strip()
    params: dict[str, str] = {}
    section = re.search(r"^(?:Args|Arguments|Parameters):\s*\n((?:[ \t]+.*\n?)+)", doc, re.MULTILINE)
    if section:
        current = None
        for line in section.group(1).splitlines():
            match = re.match(r"\s+(\w+)(?:\s*\([^)]*\))?:\s*(.*)", line)
            if match and (current is None or len(line) - len(line.lstrip()) <= 4):
                current = match.group(1)
                params[current] = match.group(2).strip()
            elif current and line.strip():
                params[current] += " " + line.strip()
    return " ".join(head.split()), params


def _args_model(fn: Callable[..., Any], name: str, described: dict[str, str]) -> type[BaseModel]:
    """A pydantic model of the function's parameters, from its type hints (no hint: any JSON value)."""
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise InputError(f"tool {name!r}: *args and **kwargs have no schema; name every parameter")
        hint = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        from pydantic import Field

        fields[param.name] = (hint, Field(default, description=described.get(param.name) or None))
    title = "".join(p.capitalize() for p in re.split(r"[_.-]", name)) + "Args"
    return create_model(title, __config__=ConfigDict(extra="forbid"), **fields)


def make_tool(fn: Callable[..., Any], *, name: str | None = None, description: str | None = None, pure: bool = False,
              timeout_s: float = DEFAULT_TIMEOUT_S, max_concurrency: int | None = None, source: str = "python",
              requires_approval: bool = False) -> Tool:
    """A ``Tool`` from a typed function: the schema from its hints, the description from its docstring."""
    if not callable(fn):
        raise InputError(f"a tool needs a function, got {type(fn).__name__}")
    label = name or fn.__name__
    summary, described = _doc_parts(fn)
    model = _args_model(fn, label, described)
    schema = model.model_json_schema()  # strings are bounded where a reply is decoded (tool_calls.reply_spec)
    schema.pop("title", None)
    return Tool(label, description or summary or label, schema, fn, pure, timeout_s, max_concurrency, source, model,
                requires_approval)


@overload
def tool(fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
         pure: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S, max_concurrency: int | None = None,
         requires_approval: bool = False) -> Tool: ...
@overload
def tool(fn: None = None, *, name: str | None = None, description: str | None = None,
         pure: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S, max_concurrency: int | None = None,
         requires_approval: bool = False) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None,
         pure: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S, max_concurrency: int | None = None,
         requires_approval: bool = False) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """``@tool`` or ``@tool(pure=True, timeout_s=5)`` on a typed sync or async function: it becomes a ``Tool``."""

    def wrap(f: Callable[..., Any]) -> Tool:
        return make_tool(f, name=name, description=description, pure=pure, timeout_s=timeout_s,
                         max_concurrency=max_concurrency, requires_approval=requires_approval)

    return wrap(fn) if fn is not None else wrap


def as_tool(obj: Any, name: str = "") -> Tool:
    """An entry point's or a caller's object as a Tool: a ``Tool``, or a plain function."""
    if isinstance(obj, Tool):
        return obj
    if callable(obj):
        return make_tool(obj, name=name or None)
    raise TypeError(f"{obj!r} is not a tool (expected a Tool or a function)")


Closer = Callable[[], Awaitable[None]]


class ToolBox:
    """The runtime's tools by name: ``@tool`` objects added in code, plug-ins, MCP tool sets."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._closers: list[Closer] = []
        self._sets: dict[str, list[str]] = {}  # a set's name (an MCP server's) -> its tools' names
        self.broken: list[tuple[str, str]] = []  # (entry point or server, why it was skipped)
        self._plugins_loaded = False
        for item in tools:
            self.add(item)

    def add(self, item: Tool, replace: bool = False) -> Tool:
        old = self._tools.get(item.name)
        if old is not None and old is not item and not replace:
            raise InputError(f"tool {item.name!r} is already registered (from {old.source})")
        self._tools[item.name] = item
        return item

    def add_set(self, name: str, names: Iterable[str]) -> None:
        """A named tool set (an MCP server's tools): ``resolve`` and ``in`` take its name for all of them."""
        self._sets[name] = list(names)

    def sets(self) -> dict[str, list[str]]:
        return {name: list(names) for name, names in self._sets.items()}

    def on_close(self, closer: Closer) -> None:
        """Something to stop with the runtime (an MCP server's session)."""
        self._closers.append(closer)

    def get(self, name: str) -> Tool:
        self.load_plugins()
        found = self._tools.get(name)
        if found is None:
            raise InputError(f"unknown tool {name!r}; available: {', '.join(sorted(self._tools)) or 'none'}")
        return found

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return name in self._tools or name in self._sets

    def names(self) -> list[str]:
        self.load_plugins()
        return sorted(self._tools)

    def all(self) -> list[Tool]:
        return [self._tools[n] for n in self.names()]

    def resolve(self, items: Iterable[Tool | str | Callable[..., Any]]) -> list[Tool]:
        """Tools by name (from this box; a set's name gives all its tools) or as objects (added to it, so their
        cap and cache are the runtime's)."""
        out: list[Tool] = []
        for item in items:
            if isinstance(item, str) and item in self._sets and item not in self._tools:
                out.extend(self.get(name) for name in self._sets[item])
            elif isinstance(item, str):
                out.append(self.get(item))
            else:
                made = as_tool(item)
                known = self._tools.get(made.name)
                out.append(known if known is not None and (known is made or known.fn is made.fn) else self.add(made))
        return list({t.name: t for t in out}.values())

    def load_plugins(self, entry_points: Any = None) -> None:
        """The ``vivace.tools`` entry points, once; each is a ``Tool``, a function, or a list of them."""
        if self._plugins_loaded and entry_points is None:
            return
        self._plugins_loaded = True

        def make(ep: Any, source: str) -> None:
            obj = ep.load()
            items = [as_tool(o) for o in obj] if isinstance(obj, (list, tuple)) else [as_tool(obj, ep.name)]
            for item in items:
                item.source = source
                self.add(item)

        load_group(GROUP, "tool", make, self.broken, entry_points)

    async def aclose(self) -> None:
        closers, self._closers = self._closers[::-1], []
        for close in closers:
            try:
                await close()
            except Exception as exc:  # noqa: BLE001 - one server that fails to stop must not keep the others up
                log.warning("a tool set failed to close: %s", exc)
