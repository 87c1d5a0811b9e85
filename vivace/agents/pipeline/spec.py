"""Multi-agent pipelines: steps (agents), edges, fan-out and bounded loops, as one LangGraph graph.

Why a graph of steps: steps with no path between them run in the same
superstep, so independent agents are concurrent by construction; a fan-out
step runs once per item of its input through ``Send`` (one superstep, so the
engine batches the branches); and a loop edge is taken only while its bound
allows, so a critic cannot keep a writer busy forever. A pipeline is itself an
Agent, so pipelines nest. Defined in code or in a small TOML file::

    name = "review"
    output = "write"
    edges = [["plan", "research"], ["research", "write"], ["write", "check"]]
    [steps]
    plan = "planner"
    research = { agent = "researcher", fan_out = true, max_branches = 4 }
    write = "writer"
    check = "critic"
    [[loops]]
    from = "check"
    to = "write"
    when = "revise"
    max_rounds = 2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from vivace.agents.base import Agent, AgentContext, Node, StepInput, task_text
from vivace.agents.pipeline.state import BranchState as BranchState
from vivace.agents.pipeline.state import PipelineState as PipelineState
from vivace.agents.pipeline.state import _as_text, _bound
from vivace.agents.pipeline.state import parse_items as parse_items
from vivace.agents.sampling import Sampling, check_sampling
from vivace.errors import InputError


DEFAULT_MAX_BRANCHES = 8


@dataclass
class Step:
    """One node: ``agent`` is a registry name; ``impl`` an Agent object used instead of the lookup."""

    name: str
    agent: str
    fan_out: bool = False
    max_branches: int = DEFAULT_MAX_BRANCHES
    impl: Agent | None = None
    per_item: bool = False  # run once per branch of the fan-out before it, as soon as that branch is done
    params: dict[str, Any] = field(default_factory=dict)  # handed to the agent as ``StepInput["params"]``
    model: str | None = None  # one of the runtime's models ("default", a [models.NAME]); None: the run's default
    # Defaults of the step's calls: a Sampling, or a mapping checked into one here (vivace.agents.sampling).
    sampling: Sampling = field(default_factory=Sampling)
    tools: tuple[str, ...] = ()  # the runtime's tools this step may call (none named: the run's tools)
    requires_approval: bool = False  # the run pauses before this step until someone approves it

    def __post_init__(self) -> None:
        self.sampling = check_sampling(self.sampling, f"step {self.name!r}")


@dataclass
class Loop:
    """A back edge ``source -> target`` taken when ``source`` decides ``when``, at most ``max_rounds`` times."""

    source: str
    target: str
    when: str = "revise"
    max_rounds: int | None = None


class Pipeline(Agent):
    """Steps and edges; ``output`` names the step whose text is the result (default: the only sink)."""

    def __init__(
        self,
        name: str,
        steps: Iterable[Step],
        edges: Iterable[tuple[str, str]] = (),
        loops: Iterable[Loop] = (),
        output: str | None = None,
        description: str = "",
    ) -> None:
        self.name, self.description = name, description
        self.steps = {s.name: s for s in steps}
        self.step_list = list(steps) if isinstance(steps, list) else list(self.steps.values())
        self.edges = [tuple(e) for e in edges]
        self.loops = list(loops)
        self.output = output
        self.needs_input = False
        self.source_file: str | None = None  # the TOML file it was read from, if any

    # ---- definition -------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | Path) -> "Pipeline":
        from vivace.agents.pipeline.file import read_toml

        file = Path(path)
        pipe = cls.from_dict(read_toml(file), origin=str(file), default_name=file.stem)
        pipe.source_file = str(file.resolve())  # what a resumed run loads again
        return pipe

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "pipeline", default_name: str = "pipeline") -> "Pipeline":
        """A pipeline from its TOML table; a value of the wrong shape is an ``InputError`` naming it."""
        from vivace.agents.pipeline.file import parse

        spec = parse(data, origin, DEFAULT_MAX_BRANCHES)
        return cls(spec["name"] or default_name, [Step(**s) for s in spec["steps"]], spec["edges"],
                   [Loop(*lp) for lp in spec["loops"]], spec["output"], spec["description"])

    # ---- validation -------------------------------------------------------------------------

    def preds(self, step: str) -> list[str]:
        return [a for a, b in self.edges if b == step]

    def succs(self, step: str) -> list[str]:
        return [b for a, b in self.edges if a == step]

    def group_head(self, step: str) -> str:
        """The fan-out step a per-item chain hangs from (a step that is not per-item is its own head)."""
        while self.steps[step].per_item:
            step = self.preds(step)[0]
        return step

    def downstream(self, step: str) -> int:
        """Steps still to run after ``step`` on its longest path to the end: its place in the program."""
        memo: dict[str, int] = {}

        def depth(n: str) -> int:
            if n not in memo:
                memo[n] = 0
                memo[n] = max((1 + depth(m) for m in self.succs(n)), default=0)
            return memo[n]

        return depth(step)

    def validate(self, lookup: Any = None) -> "Pipeline":
        """Raise ``InputError`` for the first problem: unknown agent, unbounded loop, missing input…"""
        from vivace.agents.registry import REGISTRY

        lookup = lookup or REGISTRY.get
        where = f"pipeline {self.name!r}"
        if not self.steps:
            raise InputError(f"{where} has no steps")
        if len(self.steps) != len(self.step_list):
            raise InputError(f"{where}: step names must be unique")
        names = ", ".join(self.steps)
        agents = {}
        for step in self.step_list:
            try:
                agents[step.name] = step.impl or lookup(step.agent)
            except InputError as exc:
                raise InputError(f"{where}, step {step.name!r}: {exc}") from None
            if step.max_branches < 1:
                raise InputError(f"{where}, step {step.name!r}: max_branches must be at least 1")
        for a, b in [*self.edges, *((lp.source, lp.target) for lp in self.loops)]:
            for end in (a, b):
                if end not in self.steps:
                    raise InputError(f"{where}: edge {a} -> {b} names no step {end!r} (steps: {names})")
        if cycle := self._cycle():
            raise InputError(f"{where}: loop without a bound: {' -> '.join(cycle)}; declare it as a loop "
                             "with max_rounds instead of an edge")
        for lp in self.loops:
            if lp.max_rounds is None:
                raise InputError(f"{where}: loop without a bound: {lp.source} -> {lp.target} needs max_rounds")
            if lp.max_rounds < 0:
                raise InputError(f"{where}: loop {lp.source} -> {lp.target}: max_rounds must not be negative")
        for step in self.step_list:
            preds = self.preds(step.name)
            if step.per_item and (step.fan_out or len(preds) != 1 or not (
                    self.steps[preds[0]].fan_out or self.steps[preds[0]].per_item)):
                raise InputError(f"{where}: per-item step {step.name!r} needs exactly one incoming edge, from a "
                                 "fan-out or per-item step (and is not a fan-out itself)")
            if step.per_item and any(step.name in (lp.source, lp.target) for lp in self.loops):
                raise InputError(f"{where}: per-item step {step.name!r} cannot be a loop's end; loop over its "
                                 "fan-out step or a step after the chain")
            if step.fan_out and len(preds) != 1:
                raise InputError(f"{where}: missing input: fan-out step {step.name!r} needs exactly one incoming "
                                 f"edge to take its items from (has {len(preds)})")
            if not preds and len(self.steps) > 1 and getattr(agents[step.name], "needs_input", False):
                raise InputError(f"{where}: missing input: step {step.name!r} (agent {step.agent!r}) needs "
                                 "upstream output but no edge leads to it")
            if len(preds) > 1 and any(lp.source in preds for lp in self.loops):
                raise InputError(f"{where}: step {step.name!r} joins several inputs, one of them a loop's source; "
                                 "put the loop's source last in its own chain")
        sinks = [s.name for s in self.step_list if not self.succs(s.name)]
        if self.output is not None and self.output not in self.steps:
            raise InputError(f"{where}: output {self.output!r} is not a step (steps: {names})")
        if self.output is None and len(sinks) != 1:
            raise InputError(f"{where} ends in several steps ({', '.join(sinks)}); set output = the one to return")
        return self

    def _cycle(self) -> list[str] | None:
        """A cycle made of plain edges, if any (loops are bounded back edges, not plain edges)."""
        state: dict[str, int] = {}
        path: list[str] = []

        def visit(n: str) -> list[str] | None:
            state[n] = 1
            path.append(n)
            for m in self.succs(n):
                if state.get(m) == 1:
                    return path[path.index(m):] + [m]
                if m not in state and (found := visit(m)):
                    return found
            state[n] = 2
            path.pop()
            return None

        for s in self.steps:
            if s not in state and (found := visit(s)):
                return found
        return None

    @property
    def result_step(self) -> str:
        return self.output or next(s.name for s in self.step_list if not self.succs(s.name))

    # ---- execution --------------------------------------------------------------------------

    def compile(self, ctx: AgentContext) -> Any:
        """The LangGraph graph of this pipeline for one run (agents build their nodes with ``ctx``).

        ``dataflow`` (the default): a step starts when its own inputs are ready;
        ``supersteps``: LangGraph's ``StateGraph`` rounds, the way a plain
        graph runs (kept for comparison).
        """
        self.validate()
        execution = ctx.options.execution or ctx.config.execution  # both checked: RunOptions, Config
        from vivace.agents.registry import REGISTRY
        from vivace.agents.pipeline.step_node import StepNode

        scope = ctx.tracer.scope()
        nodes = {s.name: StepNode(self, s, (s.impl or REGISTRY.get(s.agent)).build(ctx), ctx, scope)
                 for s in self.step_list}
        if execution == "supersteps":
            from vivace.agents.pipeline.supersteps import superstep_graph

            return superstep_graph(self, nodes, ctx)
        from vivace.agents.pipeline.dataflow import dataflow_graph

        return dataflow_graph(self, nodes, ctx)

    def recursion_limit(self, ctx: AgentContext) -> int:
        rounds = sum(_bound(lp, ctx) for lp in self.loops)
        return (len(self.steps) + 2) * (rounds + 1) + 10

    async def invoke(self, task: str, ctx: AgentContext, graph: Any = None) -> tuple[str, dict[str, Any]]:
        """Run the pipeline (or its already ``compile``d graph) on ``task``; the result text and final state."""
        graph = graph or self.compile(ctx)
        state = await graph.ainvoke(
            PipelineState(task=task, outputs={}, items={}, decisions={}, counts={}, loops={}, routes={}, messages=[]),
            config={"recursion_limit": self.recursion_limit(ctx)},
        )
        return _as_text((state.get("outputs") or {}).get(self.result_step, "")), state

    def build(self, ctx: AgentContext) -> Node:
        """As a step of another pipeline: run on the branch item or task plus the history."""

        async def node(inp: StepInput) -> str:
            text, _ = await self.invoke(task_text(inp), ctx)
            return text

        return node


def single(agent: Agent) -> Pipeline:
    """An agent on its own, as a one-step pipeline (so every run is traced the same way)."""
    if isinstance(agent, Pipeline):
        return agent
    return Pipeline(agent.name, [Step(agent.name, agent.name, impl=agent)], description=agent.description)
