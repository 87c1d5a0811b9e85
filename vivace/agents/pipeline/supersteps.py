"""A pipeline as a LangGraph ``StateGraph``: steps run in supersteps, the way a plain graph runs.

Why keep it beside the dataflow execution: it is the baseline the dataflow
one is measured against (``execution = "supersteps"``), and the shape most
LangGraph users write by hand: independent steps share a superstep, a
fan-out is one superstep of ``Send``s, and a step waits for the whole
superstep before it, siblings included. A per-item step runs one superstep
after the whole fan-out before it, through a pass-through node that hands out
the branches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vivace.agents.pipeline.state import BranchState, PipelineState

if TYPE_CHECKING:
    from vivace.agents.base import AgentContext
    from vivace.agents.pipeline.spec import Pipeline
    from vivace.agents.pipeline.step_node import StepNode


def _node_fn(step_node: "StepNode") -> Any:
    """A plain ``async def`` for LangGraph (it runs other callables in a thread pool)."""

    async def run_step(state):  # type: ignore[no-untyped-def]  # no hint: the graph's schema applies
        return await step_node(state)

    run_step.__name__ = step_node.step.name
    return run_step


def superstep_graph(pipe: "Pipeline", nodes: dict[str, "StepNode"], ctx: "AgentContext") -> Any:
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    graph = StateGraph(PipelineState)
    for step in pipe.step_list:
        fn = _node_fn(nodes[step.name])
        if step.fan_out or step.per_item:
            graph.add_node(step.name, fn, input_schema=BranchState)
        else:
            graph.add_node(step.name, fn)
    for step in pipe.step_list:
        if not pipe.preds(step.name):
            graph.add_edge(START, step.name)
    joined: set[str] = set()
    max_branches = ctx.options.max_branches

    def fans_of(source: str, state: PipelineState, targets: list[str]) -> list[Any]:
        out: list[Any] = []
        base = {k: v for k, v in state.items() if k != "messages"}
        for t in targets:
            cap = max_branches or pipe.steps[t].max_branches
            items = (state.get("items") or {}).get(source) or [state["task"]]
            out += [Send(t, {**base, "messages": [], "item": it, "branch": i}) for i, it in enumerate(items[:cap], 1)]
        return out

    for step in pipe.step_list:
        succ = pipe.succs(step.name)
        per_item = [t for t in succ if pipe.steps[t].per_item]
        fans = [t for t in succ if pipe.steps[t].fan_out]
        plain = [t for t in succ if not (pipe.steps[t].fan_out or pipe.steps[t].per_item)]
        loops = [lp for lp in pipe.loops if lp.source == step.name]
        if per_item:  # wait for every branch, then hand each one to its own successor
            dispatch = f"{step.name}.each"

            async def pass_through(state: PipelineState) -> dict[str, Any]:
                return {}

            graph.add_node(dispatch, pass_through)
            graph.add_edge(step.name, dispatch)

            def each(state: PipelineState, _s: str = step.name, _t: list[str] = per_item) -> list[Any]:
                outputs = (state.get("outputs") or {}).get(_s) or {}
                first = pipe.group_head(_s)
                items = (state.get("items") or {}).get(pipe.preds(first)[0]) or [state["task"]]
                base = {k: v for k, v in state.items() if k != "messages"}
                return [Send(t, {**base, "messages": [], "item": items[b - 1] if b - 1 < len(items) else state["task"],
                                 "branch": b}) for t in _t for b in sorted(outputs)]

            graph.add_conditional_edges(dispatch, each, per_item)
        if not fans and not loops:
            for t in plain:
                preds = pipe.preds(t)
                if len(preds) > 1:
                    if t not in joined:
                        graph.add_edge(preds, t)  # waits for all of them
                        joined.add(t)
                else:
                    graph.add_edge(step.name, t)
            if not succ:
                graph.add_edge(step.name, END)
            continue

        def router(state: PipelineState, _s: str = step.name, _plain: list[str] = plain,
                   _fans: list[str] = fans) -> Any:
            chosen = (state.get("routes") or {}).get(_s)
            if chosen:
                return [chosen]
            return [*_plain, *fans_of(_s, state, _fans)] or [END]

        targets = [*plain, *fans, *(lp.target for lp in loops), END]
        graph.add_conditional_edges(step.name, router, list(dict.fromkeys(targets)))
    return graph.compile(name=f"vivace-pipeline-{pipe.name}")
