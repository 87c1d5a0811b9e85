"""Hand-rolled LangGraph for a SoT run: the same requests through a bare StateGraph, no vivace.

Why in the overhead bench: vivace is meant to cost no more than what a user
would write by hand with LangGraph, and that cost differs per machine. The
graph is what a competent LangGraph user would write: a skeleton node, a
``Send`` per point, a join; async nodes, no checkpointer, a list reducer
collecting the expansions. (vivace's own controller runs the points inside
one stage, ``vivace.agents.sot.points``, so it is not bound by this shape.)
"""

from __future__ import annotations

import operator
import time
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from vivace.runtime import complete


class _State(TypedDict, total=False):
    texts: Annotated[list[str], operator.add]
    answer: str


def floor_graph(backend: Any, requests: list[Any]) -> Any:
    """A compiled graph that sends ``requests[0]`` (the skeleton), then every other request as one ``Send`` each."""
    async def skeleton(state: _State) -> dict[str, Any]:
        result = await complete(backend, requests[0])
        return {"texts": [result.text]}

    async def fan_out(state: _State) -> list[Send]:
        return [Send("expand", {"index": i}) for i in range(1, len(requests))]

    async def expand(branch: dict[str, int]) -> dict[str, Any]:
        result = await complete(backend, requests[branch["index"]])
        return {"texts": [result.text]}

    async def join(state: _State) -> dict[str, Any]:
        return {"answer": "\n".join(state["texts"][1:])}

    graph = StateGraph(_State)
    graph.add_node("skeleton", skeleton)
    graph.add_node("expand", expand)  # type: ignore[arg-type]  # langgraph: a Send target takes the Send's payload, not _State
    graph.add_node("join", join)
    graph.add_edge(START, "skeleton")
    graph.add_conditional_edges("skeleton", fan_out, ["expand"])
    graph.add_edge("expand", "join")
    graph.add_edge("join", END)
    return graph.compile()


async def floor_run(graph: Any) -> float:
    """One run of the bare graph. Seconds, timed like the baseline (``perf_counter`` around it)."""
    t0 = time.perf_counter()
    await graph.ainvoke({"texts": []})
    return time.perf_counter() - t0
