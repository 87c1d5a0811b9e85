"""The Agent interface, the per-run context, and the tracer every call of a run is recorded by.

Why so small: an agent is a name, a description and ``build(ctx)`` returning an
async node (or a compiled LangGraph graph). Timing, attribution to agents,
the context decision before each call (retrieval, compression, history
included) and naming the agent that failed are done around the node by the
pipeline and the call path, so a plug-in author writes only prompts and
``ctx.call``.

A node takes a ``StepInput`` and returns its output text, or a dict with
``output`` and optionally ``items`` (a list the next step fans out over) and
``decision`` (which a bounded loop edge matches, e.g. ``"revise"``).
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator, TypedDict, Union, cast

from vivace.agents.options import RunOptions
from vivace.agents.events import AgentDelta, AgentDone, AgentFailed, AgentStarted, Event, ToolDone, ToolStarted
from vivace.agents.sampling import call_sampling, step_settings
from vivace.runtime.backend import GenerationResult, Message
from vivace.runtime.call import Call, Scope
from vivace.runtime.prompts import render
from vivace.runtime.tool_path import ToolCall, ToolOutcome, ToolScope
from vivace.trace import CallTrace, RouterDecision, SotRecord, StepRecord, ToolTrace

if TYPE_CHECKING:
    from vivace.config import Config
    from vivace.runtime.tools import Tool
    from vivace.runtime.backend import Backend
    from vivace.runtime.runtime import Runtime

log = logging.getLogger(__name__)

__all__ = ["Agent", "AgentContext", "Node", "NodeResult", "StepInput", "StepRun", "Tracer", "current_step", "task_text"]


class StepInput(TypedDict):
    """What a node receives: the task, its upstream outputs, and the history handed to it.

    ``history`` is the upstream outputs as one text; the call path may compress
    it inside any prompt that carries it, when the cost model says it pays.
    ``item``/``branch`` are set for a fan-out branch; ``round`` counts earlier
    runs of this step (revision rounds). ``params`` are the step's own
    settings from its definition (``params = { language = "de" }``).
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
    params: dict[str, Any]


@dataclass(frozen=True)
class NodeResult:
    """What a node gives back beyond its text: the ``items`` a fan-out after it splits over, the ``decision`` a
    loop or route reads (``approve``/``revise``, a route's label). A node may also return plain text."""

    output: str
    items: tuple[str, ...] | None = None
    decision: str | None = None

    def __post_init__(self) -> None:
        if self.items is not None:
            object.__setattr__(self, "items", tuple(str(i) for i in self.items))
        if self.decision is not None:
            object.__setattr__(self, "decision", str(self.decision).strip().lower())


Node = Callable[[StepInput], Awaitable[Union[str, NodeResult]]]


class Agent:
    """Subclass and set ``name``/``description``; ``build`` returns the node for one run."""

    name: str = ""
    description: str = ""
    #: True when the agent is useless without upstream output (a writer, a critic): a pipeline
    #: that starts with it is rejected as having a missing input.
    needs_input: bool = False
    #: False when the agent's model text is not its answer (a plan, a tool call): the CLI shows the answer at the end.
    streams_answer: bool = True

    def build(self, ctx: "AgentContext") -> Node | Any:
        """An async ``node(StepInput) -> str | dict``, or a compiled graph with ``ainvoke``."""
        raise NotImplementedError


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
    tool_calls: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None
    downstream: int = 0  # steps still to run after this one: calls on longer paths go first
    extra: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # the step's model and sampling (its calls' defaults)
    sampling: dict[str, Any] = field(default_factory=dict)
    tools: list[str] = field(default_factory=list)  # the tools the step may call (empty: the run's)
    # What the step's calls default to: the retrieval query and the history the policy may compress.
    query: str = field(default="", repr=False)
    history: str = field(default="", repr=False)
    key: str = ""  # its place in the run: what a checkpoint saves it under (vivace.agents.journal)

    @property
    def seconds(self) -> float:
        return (self.ended_at or time.time()) - self.started_at

    def to_dict(self) -> StepRecord:
        """The run record's copy: every field but the call defaults (``query``, ``history``), plus ``seconds``.

        Read off the instance, so a field added to ``StepRun`` reaches the record without a second list here.
        """
        skip = {"query", "history"}
        return cast(StepRecord, {k: v for k, v in self.__dict__.items() if k not in skip} | {"seconds": self.seconds})


_CURRENT: contextvars.ContextVar[StepRun | None] = contextvars.ContextVar("vivace_step", default=None)


def current_step() -> StepRun | None:
    """The step run this task is executing (asyncio tasks inherit it, so branches keep theirs)."""
    return _CURRENT.get()


def enter_step(run: StepRun) -> contextvars.Token[StepRun | None]:
    return _CURRENT.set(run)


def leave_step(token: contextvars.Token[StepRun | None]) -> None:
    _CURRENT.reset(token)


class Tracer:
    """Collects every call, step run and streamed text of one run, and forwards events as they happen.

    The streamed text is what an interrupted run keeps as its partial answer.
    """

    def __init__(self, run_id: str, on_event: Callable[[Event], None] | None = None) -> None:
        self.run_id = run_id
        self.on_event = on_event
        self.calls: list[CallTrace] = []
        self.tools: list[ToolTrace] = []
        self.runs: list[StepRun] = []
        self.meta: dict[str, Any] = {}  # an agent's own data for the run's ``meta``
        self.sot: SotRecord | None = None  # the SoT controller's record, with its route and points (last SoT step's)
        self.router: RouterDecision | None = None
        self.points: list[str] = []
        self.streamed: dict[tuple[str, Any], list[str]] = {}  # pieces, joined only when asked
        self._ids = itertools.count(1)

    def emit(self, event: Event) -> None:
        key = event.stream()
        if key is not None:
            self.streamed.setdefault(key, []).append(event.text)  # type: ignore[attr-defined]
        self.forward(event)

    def forward(self, event: Event) -> None:
        """Pass ``event`` on without keeping its text: for a mirror of text the run already keeps.

        (The SoT agent mirrors its points' text as its step's ``AgentDelta``;
        kept twice, an interrupted run's partial answer held every point twice.)
        """
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a broken printer must not kill the run
                log.exception("event handler failed on %s", event.kind)

    def partial_text(self) -> str:
        """The text streamed so far, one block per call stream, in the order they started."""
        texts = ("".join(pieces).strip() for pieces in self.streamed.values())
        return "\n\n".join(t for t in texts if t)

    def start(self, scope: int, step: str, agent: str, branch: int | None, round_: int, deps: list[int],
              key: str = "") -> StepRun:
        parent = current_step()
        run = StepRun(next(self._ids), scope, step, agent, branch, round_, time.time(),
                      parent.id if parent else None, deps, key=key)
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
        for step in lineage(run, self.runs):
            step.calls += 1
            step.prompt_tokens += call.prompt_tokens
            step.output_tokens += call.output_tokens

    def record_current(self, call: CallTrace) -> None:
        """The call path's recorder: the call belongs to the step this task is running."""
        self.record(call, current_step())

    def tool_started(self, call: ToolCall) -> None:
        """The tool path began ``call`` for the current step: the live view shows it."""
        run = current_step()
        self.emit(ToolStarted(self.run_id, step=run.step if run else "", agent=run.agent if run else "",
                              name=call.name, call_id=call.id, arguments=call.arguments,
                              branch=run.branch if run else None))

    def record_tool(self, trace: ToolTrace) -> None:
        """Keep a finished tool call, count it on its step run (and the enclosing ones), and say so."""
        self.tools.append(trace)
        for step in lineage(current_step(), self.runs):
            step.tool_calls += 1
        self.emit(ToolDone(self.run_id, step=trace.node, agent=trace.agent, name=trace.name, call_id=trace.call_id,
                           seconds=trace.seconds, error=trace.error, cache_hit=trace.cache_hit, trace=trace,
                           branch=trace.branch))

    def scope(self) -> int:
        """A fresh id for one pipeline invocation (nested pipelines reuse step names)."""
        return next(self._ids)


@dataclass
class AgentContext:
    """What every agent of one run shares: the runtime (call path, backend, config), the tracer, the run's scope.

    ``options`` (``RunOptions``) carries per-run knobs such as ``max_branches``,
    ``max_rounds`` and ``mode`` (they replace every fan-out's, loop's and SoT
    step's setting for this run), and ``max_tokens`` and ``temperature`` (every
    call's cap and default temperature, as a client of ``vivace serve`` asks).
    """

    runtime: "Runtime"
    tracer: Tracer
    scope: Scope = field(default_factory=Scope)
    options: RunOptions = field(default_factory=RunOptions.parse)
    tools: list["Tool"] = field(default_factory=list)  # the run's tools: what steps that name none may call

    @property
    def config(self) -> "Config":
        return self.runtime.config

    @property
    def backend(self) -> "Backend":
        return self.runtime.backend

    @property
    def collection(self) -> str | None:
        return self.scope.collection

    def render(self, name: str, package: str = "vivace.agents", **values: object) -> tuple[list[Message], str | None]:
        """Fill the prompt file ``<package>/prompts/<name>.txt`` (plug-ins pass their own package)."""
        return render(name, package, **values)

    async def send(self, call: Call, on_text: Callable[[str], None] | None = None) -> tuple[GenerationResult, CallTrace]:
        """A fully specified call through the call path (the SoT controller uses this with its own events).

        The steps still ahead of the current one add to the call's own
        ``downstream``: the call path's priority reads the place in the program.
        A call that names no model goes to the current step's (else the run's ``model`` option).
        """
        run = current_step()
        if run is not None and run.downstream:
            call = replace(call, downstream=call.downstream + run.downstream)
        if call.model is None:
            model = step_settings(run, self.tracer.runs)[0] or self.options.model
            call = replace(call, model=model) if model else call
        return await self.runtime.call(call, on_text, self.scope)

    async def call(
        self,
        messages: list[Message],
        *,
        prefill: str | None = None,
        max_tokens: int | None = None,
        stop: list[str] | tuple[str, ...] = (),
        temperature: float | None = None,
        repetition_penalty: float | None = None,
        query: str | None = None,
        retrieve: bool = True,
        model: str | None = None,
        output: Any = None,
        tools: "list[Tool] | None" = None,
        tool_choice: Any = None,
        parallel_tool_calls: bool = True,
        output_retries: int = 1,
        on_text: Callable[[str], None] | None = None,
        **extra: Any,
    ) -> GenerationResult:
        """One model call from the current step: streamed as ``AgentDelta``, traced with its agent.

        ``max_tokens`` is the agent's own cap; the run's ``max_tokens`` option
        (else the config's) bounds it, and the run's ``temperature`` option is
        the default temperature. Before the call the context policy retrieves for ``query`` (default:
        the step's item or task) when the run has a collection, and may compress
        the step's history and the retrieved context. ``extra`` goes into the
        CallTrace. ``model`` and the sampling arguments win over the step's
        ``model``/``sampling`` (precedence: ``vivace.agents.pipeline.step_model``).
        ``output`` constrains the reply (``result.parsed``); ``tools`` (default
        none: pass ``ctx.step_tools()`` to offer the step's) lets the model ask for
        calls (``result.tool_calls``), which ``call_tools`` runs. ``on_text`` also
        hears the text as it streams (the ``tools`` agent dispatches plan entries from it).
        """
        run = current_step()
        step, name = (run.step, run.agent) if run else ("", "")
        branch = run.branch if run else None
        step_model, sampling = step_settings(run, self.tracer.runs)
        call = Call(
            messages=messages,
            prefill=prefill,
            **call_sampling(sampling, self.options, self.config.max_tokens, max_tokens=max_tokens,
                            temperature=temperature, repetition_penalty=repetition_penalty),
            model=model or step_model or self.options.model,
            stop=tuple(stop),
            node=step or "call",
            agent=name,
            branch=branch,
            round=run.round if run else 0,
            query=query or (run.query if run else None) or None,
            compressible=(run.history,) if run and run.history else (),
            retrieve=retrieve,
            extra=extra,
            output=output,
            tools=tuple(tools or ()),
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            output_retries=output_retries,
        )
        request_id = f"{self.tracer.run_id}/{step}/{branch}/{time.monotonic_ns()}"

        def streamed(text: str) -> None:
            self.tracer.emit(AgentDelta(self.tracer.run_id, step=step, agent=name, text=text, branch=branch,
                                        request_id=request_id))
            if on_text is not None:
                on_text(text)

        result, _ = await self.send(call, streamed)
        return result

    def token_cap(self, max_tokens: int | None = None) -> int:
        """The cap a call of the current step asking for ``max_tokens`` gets (the step's, the run's, the config's)."""
        sampling = step_settings(current_step(), self.tracer.runs)[1]
        return int(call_sampling(sampling, self.options, self.config.max_tokens, max_tokens=max_tokens,
                                 temperature=None, repetition_penalty=None)["max_tokens"])

    def step_tools(self) -> list["Tool"]:
        """The tools the current step may call: those its definition names, else the run's."""
        run = current_step()
        names = step_tool_names(run, self.tracer.runs)
        return self.runtime.tools.resolve(names) if names else list(self.tools)

    async def call_tools(self, calls: list[ToolCall], allowed: "list[Tool] | None" = None) -> list[ToolOutcome]:
        """Run ``calls`` at once through the tool path (each answers, error or not), in their order."""
        import asyncio

        return list(await asyncio.gather(*(self.call_tool(c, allowed) for c in calls)))

    async def call_tool(self, call: ToolCall, allowed: "list[Tool] | None" = None) -> ToolOutcome:
        """One tool call through the tool path, from the current step, allowed only among ``allowed`` (its tools).

        A tool that requires approval asks first (the run's ``approve``, else
        the run pauses); a refused call answers the model with an error.
        """
        run = current_step()
        names = [t.name for t in (self.step_tools() if allowed is None else allowed)]
        scope = ToolScope(agent=run.agent if run else "", node=run.step if run else "",
                          branch=run.branch if run else None, started=self.scope.tool_started,
                          record=self.scope.record_tool, cache=self.options.tool_cache,
                          approve=_approve_tool)
        return await self.runtime.tool_path(call, names, scope)


async def _approve_tool(tool: "Tool", call: ToolCall) -> bool:
    """The run's journal decides (a saved answer, the run's ``approve``, or a pause); outside a run, no."""
    from vivace.agents.journal import Approval, current_journal, digest

    journal, run = current_journal(), current_step()
    if journal is None:
        return False
    args = json.dumps(call.arguments, ensure_ascii=False, default=str)[:200]
    return await journal.approval(Approval(f"{run.key if run else ''}/tool.{call.name}.{digest(call.arguments)}",
                                           "tool", run.step if run else "", f"call {call.name}({args})"))


def lineage(run: StepRun | None, runs: list[StepRun]) -> Iterator[StepRun]:
    """``run``, then the step runs that enclose it (a nested pipeline's steps run inside a step), innermost first."""
    by_id = {r.id: r for r in runs}
    while run is not None:
        yield run
        run = by_id.get(run.parent) if run.parent is not None else None


def step_tool_names(run: StepRun | None, runs: list[StepRun]) -> list[str]:
    """The tools named by ``run``'s step, or by the nearest enclosing step that names any."""
    return next((list(r.tools) for r in lineage(run, runs) if r.tools), [])


def task_text(inp: StepInput) -> str:
    """The text a general-purpose agent should work on: the branch item or the task, then the history."""
    main = inp.get("item") or inp.get("task", "")
    history = inp.get("history") or ""
    return f"{main}\n\n{history}".strip() if history else main
