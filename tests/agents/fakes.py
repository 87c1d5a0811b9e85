"""Scripted model replies and tools the agent tests share (FakeBackend responders): orchestration only.

Test modules import these from here, never from one another.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from vivace import tool
from vivace.agents.pipeline.spec import Pipeline, Step
from vivace.runtime.backend import GenerationRequest

# --- the research pipeline ------------------------------------------------------------------------------------


def research_responder(plan: tuple[str, ...] = ("Alpha part", "Beta part", "Gamma part"), review: str = "approve",
                       fix: str = "") -> Any:
    """The planner and the critic answer in the JSON their schemas ask for; the rest in text."""
    def respond(request: GenerationRequest) -> str:
        tag = request.tag
        if "/plan" in tag:
            return json.dumps({"aspects": list(plan)})
        if "/research/" in tag:
            return "Notes on " + request.messages[-1]["content"].rsplit("Sub-question:", 1)[-1].strip()
        if "/write" in tag:
            return "A draft answer."
        if "/review" in tag:
            return json.dumps({"verdict": review, "fix": fix})
        return "plain"

    return respond


def failing_writer(fail: dict[str, bool]) -> Any:
    """The research responder, whose writer fails while ``fail["write"]`` is set."""
    base = research_responder()

    def respond(request: GenerationRequest) -> str:
        if "/write" in request.tag and fail["write"]:
            raise RuntimeError("the writer's server went away")
        return base(request)

    return respond


def steps_of(calls: list[Any]) -> list[str]:
    """The steps (nodes) that made model calls, once each, sorted."""
    return sorted({c.node for c in calls})


def gated() -> Pipeline:
    """The research pipeline without its critic, whose writer waits for an approval."""
    return Pipeline("gated", [Step("plan", "planner"), Step("research", "researcher", fan_out=True),
                              Step("write", "writer", requires_approval=True)],
                    [("plan", "research"), ("research", "write")])


# --- skeleton-of-thought ---------------------------------------------------------------------------------------

SKELETON = " Brew fresh tea\n2. Choose good leaves\n3. Mind the water\n4. Steep briefly\n5. Brew fresh tea"


def sot_responder(request: GenerationRequest) -> str:
    """A skeleton of four points (and a duplicate fifth); each point's expansion names its number."""
    tag = request.tag
    if tag.endswith("/skeleton"):
        return SKELETON
    if "/expand/" in tag:
        i = int(tag.rsplit("/", 1)[1])
        return f": Detail number {i} is explained here.\n{i + 1}. An echoed point"
    return "A plain answer."


# --- the tools agent -------------------------------------------------------------------------------------------

LOG: list[tuple[str, str]] = []  # the planner's calls, cleared by each test's runtime


@tool(pure=True)
async def height(mountain: str) -> int:
    """Height of a mountain in metres."""
    await asyncio.sleep(0.15)
    return {"zorvik": 4210, "ambrosa": 5120, "tessik": 2970}[mountain.lower()]


@tool
async def subtract(a: float, b: float) -> float:
    """a minus b."""
    await asyncio.sleep(0.05)
    return a - b


def tools_responder(plan: dict[str, Any] | list[dict[str, Any]], answer: str = "Ambrosa is 2150 m taller.",
                    react: list[str] | None = None) -> Any:
    plans = plan if isinstance(plan, list) else [plan]
    react_replies = iter(react or [])

    def respond(request: GenerationRequest) -> str:
        system = request.messages[0]["content"]
        if system.startswith("You plan tool calls"):
            LOG.append(("plan", ""))
            return json.dumps(plans[min(len([x for x in LOG if x[0] == "plan"]) - 1, len(plans) - 1)])
        if system.startswith("You solve the task step by step"):
            if request.output is not None and request.output.tool_reply:
                return next(react_replies)
        return json.dumps({"answer": answer})

    return respond


CHAIN = {"calls": [{"tool": "height", "args": {"mountain": "Ambrosa"}},
                   {"tool": "height", "args": {"mountain": "Tessik"}},
                   {"tool": "subtract", "args": {"a": "$1", "b": "$2"}}]}
