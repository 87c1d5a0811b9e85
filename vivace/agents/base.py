"""The Agent interface, the per-run context and the tracer every agent call goes through.

Why so small: an agent is a name, a description and ``build(ctx)`` returning an
async node (or a compiled LangGraph graph). Timing, attribution to agents,
history compression and naming the agent that failed are done by the pipeline
around the node, so a plug-in author writes only prompts and model calls.

A node takes a ``StepInput`` and returns its output text, or a dict with
``output`` and optionally ``items`` (a list the next step fans out over) and
``decision`` (which a bounded loop edge matches, e.g. ``"revise"``).
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Awaitable, Callable, ClassVar, TypedDict, Union

from vivace.agents.events import Event
from vivace.agents.prompts import parse_template
from vivace.errors import BackendError, InputError, VivaceError
from vivace.runtime.backend import Backend, GenerationRequest, GenerationResult, Message
from vivace.trace import CallTrace

if TYPE_CHECKING:
    from vivace.config import Config

log = logging.getLogger(__name__)

__all__ = [
    "Agent", "AgentContext", "AgentDelta", "AgentDone", "AgentError", "AgentFailed", "AgentStarted",
    "Node", "StepInput", "StepRun", "Tracer", "agent", "task_text",
]


class StepInput(TypedDict, total=False):
    """What a node receives: the task, its upstream outputs, and the history handed to it.

    ``history`` is the upstream outputs as one text, already compressed when it
    exceeded the context's history budget. ``item``/``branch`` are set for a
    fan-out branch; ``round`` counts earlier runs of this step (revision rounds).
    """

    task: str
    step: str
    agent: str
    inputs: dict[str, Any]
    history: str
    item: str | None
    branch: int | None
    round: int
    messages: list[dict[str, Any]]


NodeResult = Union[str, dict[str, Any]]
Node = Callable[[StepInput], Awaitable[NodeResult]]


class Agent:
    """Subclass and set ``name``/``description``; ``build`` returns the node for one run."""

    name: str = ""
    description: str = ""
    #: True when the agent is useless without upstream output (a writer, a critic): a pipeline
    #: that starts with it is rejected as having a missing input.
    needs_input: bool = False

    def build(self, ctx: "AgentContext") -> Node | Any:
        """An async ``node(StepInput) -> str | dict``, or a compiled graph with ``ainvoke``."""
        raise NotImplementedError


class AgentError(VivaceError):
    """An agent that failed mid-run; ``trace`` (set by the runner) keeps the calls so far."""

    def __init__(self, message: str, agent: str = "", step: str = "", trace: Any = None) -> None:
        super().__init__(message)
        self.agent, self.step, self.trace = agent, step, trace


# Events a run streams besides the SoT controller's own (see vivace.agents.events).
@dataclass
class AgentStarted(Event):
    kind: ClassVar[str] = "agent_started"
    step: str
    agent: str
    branch: int | None = None
    round: int = 0


@dataclass
class AgentDelta(Event):
    kind: ClassVar[str] = "agent_delta"
    step: str
    agent: str
    text: str
    branch: int | None = None
    request_id: str = ""


@dataclass
class AgentDone(Event):
    kind: ClassVar[str] = "agent_done"
    step: str
    agent: str
    output: str
    seconds: float
    calls: int
    output_tokens: int
    branch: int | None = None
    round: int = 0


@dataclass
class AgentFailed(Event):
    kind: ClassVar[str] = "agent_failed"
    step: str
    agent: str
    message: str
    branch: int | None = None


@dataclass
class StepRun:
    """One execution of one pipeline step (one branch of a fan-out counts as one)."""

    id: int
    scope: int
    step: str
    agent: str
    branch: int | None
    round: int
    started_at: float
    parent: int | None = None
    deps: list[int] = field(default_factory=list)
    ended_at: float | None = None
    calls: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.ended_at or time.time()) - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()} | {"seconds": self.seconds}


_CURRENT: contextvars.ContextVar[StepRun | None] = contextvars.ContextVar("vivace_step", default=None)


def current_step() -> StepRun | None:
    """The step run this task is executing (asyncio tasks inherit it, so branches keep theirs)."""
    return _CURRENT.get()


class Tracer:
    """Collects every call and step run of one agent run and forwards events as they happen."""

    def __init__(self, run_id: str, on_event: Callable[[Event], None] | None = None) -> None:
        self.run_id = run_id
        self.on_event = on_event
        self.calls: list[CallTrace] = []
        self.runs: list[StepRun] = []
        self._ids = itertools.count(1)

    def emit(self, event: Event) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a broken printer must not kill the run
                log.exception("event handler failed on %s", event.kind)

    def start(self, scope: int, step: str, agent: str, branch: int | None, round_: int, deps: list[int]) -> StepRun:
        parent = current_step()
        run = StepRun(next(self._ids), scope, step, agent, branch, round_, time.time(),
                      parent.id if parent else None, deps)
        self.runs.append(run)
        self.emit(AgentStarted(self.run_id, step=step, agent=agent, branch=branch, round=round_))
        return run

    def finish(self, run: StepRun, output: str) -> None:
        run.ended_at = time.time()
        self.emit(AgentDone(self.run_id, step=run.step, agent=run.agent, output=output, seconds=run.seconds,
                            calls=run.calls, output_tokens=run.output_tokens, branch=run.branch, round=run.round))

    def fail(self, run: StepRun, message: str) -> None:
        run.ended_at, run.error = time.time(), message
        self.emit(AgentFailed(self.run_id, step=run.step, agent=run.agent, message=message, branch=run.branch))

    def record(self, call: CallTrace, run: StepRun | None = None) -> None:
        """Keep a finished call and add it to its step run's (and the enclosing runs') totals."""
        self.calls.append(call)
        by_id = {r.id: r for r in self.runs}
        while run is not None:
            run.calls += 1
            run.prompt_tokens += call.prompt_tokens
            run.output_tokens += call.output_tokens
            run = by_id.get(run.parent) if run.parent is not None else None

    def scope(self) -> int:
        """A fresh id for one pipeline invocation (nested pipelines reuse step names)."""
        return next(self._ids)


@dataclass
class AgentContext:
    """What every agent of one run shares: backend (behind the in-flight cap), config, tracer.

    ``retriever`` is a ``vivace.retrieval.store.Store`` (created on first use when a
    ``collection`` is set); ``compressor`` a ``PromptCompressor`` or None for the
    default one. ``options`` carries per-run knobs such as ``max_branches`` and
    ``max_rounds`` (they replace every fan-out's and loop's bound for this run).
    """

    backend: Backend
    config: "Config"
    tracer: Tracer
    retriever: Any = None
    compressor: Any = None
    collection: str | None = None
    history_budget_tokens: int = 1024
    options: dict[str, Any] = field(default_factory=dict)

    def store(self) -> Any:
        if self.retriever is None and self.collection:
            from vivace.retrieval.store import Store

            self.retriever = Store(self.config)
        return self.retriever

    def render(self, name: str, package: str = "vivace.agents", **values: object) -> tuple[list[Message], str | None]:
        """Fill the prompt file ``<package>/prompts/<name>.txt`` (plug-ins pass their own package)."""
        return _template(package, name).render(**values)

    async def call(
        self,
        messages: list[Message],
        *,
        prefill: str | None = None,
        max_tokens: int | None = None,
        stop: list[str] | tuple[str, ...] = (),
        temperature: float | None = None,
        repetition_penalty: float | None = None,
        **extra: Any,
    ) -> GenerationResult:
        """One model call from the current step: streamed as ``AgentDelta``, traced with its agent.

        ``max_tokens`` is the agent's own cap; the config's ``max_tokens`` bounds it.
        ``extra`` goes into the CallTrace (e.g. retrieval stats).
        """
        run = current_step()
        step, name = (run.step, run.agent) if run else ("", "")
        branch = run.branch if run else None
        cap = self.config.max_tokens
        request = GenerationRequest(
            messages=messages,
            prefill=prefill,
            max_tokens=min(max_tokens, cap) if max_tokens else cap,
            temperature=self.config.temperature if temperature is None else temperature,
            repetition_penalty=self.config.repetition_penalty if repetition_penalty is None else repetition_penalty,
            stop=list(stop),
            tag=f"{self.tracer.run_id}/{step or 'call'}" + (f"/{branch}" if branch is not None else ""),
        )
        result: GenerationResult | None = None
        async for event in self.backend.generate(request):
            if isinstance(event, GenerationResult):
                result = event
            elif event.text:
                self.tracer.emit(AgentDelta(self.tracer.run_id, step=step, agent=name, text=event.text, branch=branch,
                                            request_id=request.request_id))
        if result is None:
            raise BackendError(f"{self.backend.name}: generation {request.tag!r} ended without a result")
        call = CallTrace.from_result(result, node=step or "call", branch=branch, agent=name,
                                     round=run.round if run else 0, **extra)
        self.tracer.record(call, run)
        return result


_templates: dict[tuple[str, str], Any] = {}


def _template(package: str, name: str) -> Any:
    key = (package, name)
    if key not in _templates:
        try:
            text = resources.files(package).joinpath("prompts", f"{name}.txt").read_text(encoding="utf-8")
        except (FileNotFoundError, ModuleNotFoundError):
            raise InputError(f"no prompt template {name!r} in package {package!r}") from None
        _templates[key] = parse_template(name, text)
    return _templates[key]


def task_text(inp: StepInput) -> str:
    """The text a general-purpose agent should work on: the branch item or the task, then the history."""
    main = inp.get("item") or inp.get("task", "")
    history = inp.get("history") or ""
    return f"{main}\n\n{history}".strip() if history else main


def agent(name: str | Callable[..., Any] | None = None, *, description: str | None = None,
          needs_input: bool = False) -> Any:
    """Register an agent class or an ``async def fn(inp, ctx)`` under ``name`` (see vivace.agents.registry)."""
    from vivace.agents.registry import agent as _agent

    return _agent(name, description=description, needs_input=needs_input)
