"""The SoT controller: START -route-> normal, or -route-> points (skeleton, expansions, join; else normal decoding).

It is an agent like any other (``SotAgent``, registered as ``sot``): the run
driver runs it as a step, its calls go through the call path (so each gets its
own context decision), and its stage events join the run's one event stream.
Point expansions run as concurrent tasks of one stage (``vivace.agents.sot.points``), so
the backend batches them (decoding is bandwidth-bound: 8 streams cost about
1.4x one). Their prompts share instructions, question and skeleton first and
put the point last, so the engine's prefix cache serves the shared part. In
``auto`` the route also weighs the engine's load (``vivace.agents.sot.load``): the batch's
free slots cap the points, or send the question to normal decoding. The
graph is compiled once per process; the run's context travels in LangGraph's
runtime context.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from vivace.agents.base import Agent, AgentContext, Node, StepInput, current_step, task_text
from vivace.agents.events import (
    AgentDelta,
    AnswerDelta,
    BranchDelta,
    BranchDone,
    StepEvent,
    Routed,
    SkeletonDone,
)
from vivace.agents.sot.router import NORMAL, SOT
from vivace.agents.sot.calls import POINT_PROMPT as POINT_PROMPT
from vivace.agents.sot.calls import SKELETON_PROMPT as SKELETON_PROMPT
from vivace.agents.sot.calls import expand_point as expand_point
from vivace.agents.sot.calls import guard_answer as guard_answer
from vivace.agents.sot.calls import normal_node
from vivace.agents.sot.calls import skeleton_call as skeleton_call
from vivace.agents.sot.calls import skeleton_done as skeleton_done
from vivace.agents.sot.calls import skeleton_listing as skeleton_listing
from vivace.agents.sot.options import GUARD_REFUSAL, SotOptions
from vivace.agents.sot.points import points_node
from vivace.agents.sot.route import decide
from vivace.agents.sot.state import AGENT, Context, State
from vivace.errors import InputError
from vivace.trace import RouterDecision, SotRecord

log = logging.getLogger(__name__)

async def route_entry(state: State, runtime: Runtime[Context]) -> str:
    """The graph's entry edge: pick the first node, the user's mode or the router's, and say which and why.

    An edge, not a node: a node is a superstep of its own (about 0.12 ms a run
    in LangGraph, ``vivace bench overhead``), and the decision writes nothing
    the graph's state needs. Its time is the run's ``route`` stage.
    """
    ctx = runtime.context
    requested = ctx.options.mode
    route = await decide(ctx.agent, state["question"], ctx.options)
    ctx.options, ctx.plan, ctx.claim = route.options, route.plan, route.claim
    ctx.emit(Routed(state["run_id"], mode=route.mode, reason=route.reason, load=route.load, requested_mode=requested))
    log.debug("run %s routed to %s: %s", state["run_id"], route.mode, route.reason)
    ctx.stages["route"] = route.seconds
    return "points" if route.mode == SOT else "normal"


def build_graph() -> StateGraph[State, Context, State, State]:
    """The uncompiled controller graph, for embedding as a subgraph or extending."""
    graph = StateGraph(State, context_schema=Context)
    graph.add_node("points", points_node)
    graph.add_node("normal", normal_node)
    graph.add_conditional_edges(START, route_entry, ["points", "normal"])  # async: a sync edge runs in a thread pool
    graph.add_edge("points", END)  # an unusable skeleton falls back to normal decoding inside the stage
    graph.add_edge("normal", END)
    return graph


_COMPILED: Any = None
_TEXT = (AnswerDelta, BranchDelta)  # the streamed text a SoT run mirrors as its step's AgentDelta


def controller() -> Any:
    """The compiled controller, built once per process (compiling costs more than a run)."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = build_graph().compile(name="vivace-sot")
    return _COMPILED


def initial_state(question: str, run_id: str) -> State:
    return State(run_id=run_id, question=question, stages={})


class SotAgent(Agent):
    """The Skeleton-of-Thought controller (router, skeleton, parallel points) as one agent."""

    name = AGENT
    description = "Skeleton-of-Thought controller: a skeleton, then its points expanded in parallel."

    def build(self, ctx: AgentContext) -> Node:
        options = SotOptions.for_run(ctx)  # bad options fail here, before any call

        async def node(inp: StepInput) -> str:
            run = current_step()
            step, name = (run.step, run.agent) if run else (AGENT, self.name)
            tracer = ctx.tracer
            sot = tracer.sot = SotRecord(requested_mode=options.mode, mode=None, skeleton=None, fallback=None,
                                         failed_points={}, length_plan=None, stages={})
            tracer.router, tracer.points = None, []

            def emit(event: StepEvent) -> None:
                """Record the SoT run in the tracer, pass the event on as this step's, mirror text as its text."""
                event.step = step
                if type(event) in _TEXT:  # per token: the hot path
                    tracer.emit(event)
                    tracer.forward(AgentDelta(tracer.run_id, step=step, agent=name, text=event.text,  # type: ignore[attr-defined]
                                              branch=getattr(event, "index", None)))
                    return
                if isinstance(event, Routed):
                    router: RouterDecision = {"mode": event.mode, "reason": event.reason}
                    if event.load is not None:
                        router["load"] = event.load
                    tracer.router, sot["mode"] = router, event.mode
                elif isinstance(event, SkeletonDone):
                    tracer.points = list(event.points)
                    sot["skeleton"], sot["fallback"] = event.text, event.fallback
                    if event.fallback and event.fallback != GUARD_REFUSAL:
                        sot["mode"] = NORMAL
                elif isinstance(event, BranchDone) and event.error:
                    sot["failed_points"][event.index] = event.error
                tracer.emit(event)

            question = task_text(inp)
            if not question.strip():
                raise InputError("the question is empty")
            t0 = time.perf_counter()
            final: dict[str, Any] = {}
            run_ctx = Context(ctx, options, emit, step, name)
            try:
                final = await controller().ainvoke(initial_state(question, tracer.run_id), context=run_ctx)
            finally:
                if run_ctx.claim is not None:
                    run_ctx.claim.close()
                sot["stages"] = {**run_ctx.stages, **(final.get("stages") or {}), "total": time.perf_counter() - t0}
                if run_ctx.plan is not None:
                    sot["length_plan"] = run_ctx.plan.as_dict()
            return str(final.get("answer", ""))

        return node
