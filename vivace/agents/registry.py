"""The agent registry: built-ins, ``@agent``-decorated code, and plug-ins from entry points.

Why entry points: a third party ships an agent as an ordinary package that
declares ``[project.entry-points."vivace.agents"]``; installing it is enough
for ``vivace agents list`` and ``vivace run`` to find it. Plug-ins load once
per process, on first lookup; one that fails to import is logged, recorded in
``broken`` and skipped, so a bad package never takes the CLI down. That
includes ``sys.exit()`` (or any other ``BaseException`` but Ctrl-C) raised by
its import code: a library must not be able to end the CLI silently.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable, TypeVar, cast, overload

from vivace.agents.base import Agent, AgentContext, Node, StepInput
from vivace.errors import InputError
from vivace.plugins import load_group

log = logging.getLogger(__name__)

GROUP = "vivace.agents"
_Marked = TypeVar("_Marked", bound=Callable[..., Any])  # what @agent decorates (a class or a function), returned as is
BUILTIN_MODULES = ("vivace.agents.builtin", "vivace.agents.chat")


@dataclass
class Registered:
    agent: Agent
    source: str  # "built-in", "plug-in <dist> <version>", or "in-process <module>"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.agent.name, "description": self.agent.description, "source": self.source}


class FunctionAgent(Agent):
    """An agent made from ``async def fn(inp: StepInput, ctx: AgentContext) -> str | dict``."""

    def __init__(self, fn: Callable[..., Any], name: str, description: str, needs_input: bool = False) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"agent {name!r}: {fn.__qualname__} must be an async function (async def)")
        self.fn, self.name, self.description, self.needs_input = fn, name, description, needs_input

    def build(self, ctx: AgentContext) -> Node:
        async def node(inp: StepInput) -> Any:
            return await self.fn(inp, ctx)

        return node


# Set while a plug-in's module is imported, so its @agent registrations are attributed to it.
_loading: contextvars.ContextVar[str | None] = contextvars.ContextVar("vivace_plugin_source", default=None)


class Registry:
    def __init__(self) -> None:
        self._agents: dict[str, Registered] = {}
        self._loaded = False
        self.broken: list[tuple[str, str]] = []  # (entry point, why it was skipped)

    def register(self, item: Agent, source: str | None = None, replace: bool = False) -> Agent:
        if not item.name or not isinstance(item.name, str):
            raise InputError(f"an agent needs a name: {item!r}")
        source = source or _loading.get() or "in-process"
        old = self._agents.get(item.name)
        if old is not None and not replace and old.agent is not item:
            if old.source == "built-in" or source.startswith("plug-in"):
                log.warning("agent %r from %s ignored: the name is taken by %s", item.name, source, old.source)
                return old.agent
        self._agents[item.name] = Registered(item, source)
        return item

    def unregister(self, name: str) -> None:
        self._agents.pop(name, None)

    def ensure_loaded(self) -> None:
        """Built-ins, then plug-ins: once per process."""
        if self._loaded:
            return
        self._loaded = True
        for module in BUILTIN_MODULES:
            import_module(module)  # their @agent decorators register on REGISTRY, once per process
        if self is not REGISTRY:
            for entry in REGISTRY._agents.values():
                if entry.source == "built-in":
                    self._agents.setdefault(entry.agent.name, entry)
        self.load_plugins()

    def load_plugins(self, entry_points: Any = None) -> None:
        """Load every ``vivace.agents`` entry point; skip (and remember) the ones that fail."""

        def make(ep: Any, source: str) -> tuple[Agent, str]:
            token = _loading.set(source)
            try:
                return as_agent(ep.load(), ep.name), source
            finally:
                _loading.reset(token)

        for _, (item, source) in load_group(GROUP, "agent", make, self.broken, entry_points):
            self.register(item, source)

    def get(self, name: str) -> Agent:
        self.ensure_loaded()
        found = self._agents.get(name)
        if found is None:
            raise InputError(f"unknown agent {name!r}; available: {', '.join(sorted(self._agents)) or 'none'}")
        return found.agent

    def names(self) -> list[str]:
        self.ensure_loaded()
        return sorted(self._agents)

    def entries(self) -> list[Registered]:
        self.ensure_loaded()
        return [self._agents[n] for n in sorted(self._agents)]


REGISTRY = Registry()


def as_agent(obj: Any, name: str = "") -> Agent:
    """An entry point's object as an Agent: an instance, a class, or a (decorated) async function."""
    if isinstance(obj, Agent):
        return obj
    # Only the object's own mark: a subclass of an @agent class inherits the attribute
    # but is a different agent, so it must not resolve to its base's instance.
    marked = vars(obj).get("__vivace_agent__") if hasattr(obj, "__dict__") else None
    if isinstance(marked, Agent):
        return marked
    if isinstance(obj, type) and issubclass(obj, Agent):
        return obj()
    if callable(obj) and hasattr(obj, "build") is False and inspect.iscoroutinefunction(obj):
        return FunctionAgent(obj, name or obj.__name__, _doc(obj))
    if callable(getattr(obj, "build", None)) and getattr(obj, "name", None):
        return cast(Agent, obj)  # duck-typed agent: it has build and a name, which is all a run uses
    raise TypeError(f"{obj!r} is not an agent (expected an Agent, an Agent class, or an async function)")


def _doc(obj: Any) -> str:
    return (inspect.getdoc(obj) or "").strip().split("\n", 1)[0]


@overload
def agent(name: _Marked, *, description: str | None = None, needs_input: bool = False) -> _Marked: ...


@overload
def agent(name: str | None = None, *, description: str | None = None,
          needs_input: bool = False) -> Callable[[_Marked], _Marked]: ...


def agent(name: str | Callable[..., Any] | None = None, *, description: str | None = None,
          needs_input: bool = False) -> Any:
    """Register an agent: on an ``Agent`` subclass, or on ``async def fn(inp, ctx)``.

    ``@agent``, ``@agent("name")`` and ``@agent(name=..., description=...)`` all work.
    A function stays callable as before; its Agent is ``fn.__vivace_agent__``.
    """

    def wrap(obj: Any) -> Any:
        module = getattr(obj, "__module__", "") or ""
        source = _loading.get() or ("built-in" if module.startswith("vivace.") else f"in-process {module}")
        if isinstance(obj, type) and issubclass(obj, Agent):
            inst = obj()
            inst.name = label or inst.name or obj.__name__.lower()
            inst.description = description or inst.description or _doc(obj)
            inst.needs_input = needs_input or inst.needs_input
            REGISTRY.register(inst, source)
            setattr(obj, "__vivace_agent__", inst)  # noqa: B010 - the class's own mark, not an attribute Agent declares
            return obj
        item = FunctionAgent(obj, label or obj.__name__, description or _doc(obj), needs_input)
        REGISTRY.register(item, source)
        obj.__vivace_agent__ = item
        return obj

    if callable(name):  # bare @agent
        label: str | None = None
        return wrap(name)
    label = name
    return wrap


def get_agent(name: str) -> Agent:
    return REGISTRY.get(name)


def list_agents() -> list[Registered]:
    return REGISTRY.entries()
