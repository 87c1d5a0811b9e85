"""A pipeline run's LangGraph state, and what its steps make of their outputs.

Why its own module, below ``vivace.agents.pipeline.spec``: the pipeline compiles
its steps (``vivace.agents.pipeline.step_node``) into one of two executions
(``vivace.agents.pipeline.dataflow``, ``vivace.agents.pipeline.supersteps``), and all three read
and write this state; here they share it without importing the pipeline that
builds them.
"""

from __future__ import annotations

import operator
import re
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

if TYPE_CHECKING:
    from vivace.agents.base import AgentContext
    from vivace.agents.pipeline.spec import Loop


def _merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """Dict union; nested dicts (fan-out branches of one step) merge instead of replacing."""
    out = dict(left or {})
    for key, value in (right or {}).items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class PipelineState(TypedDict, total=False):
    task: str
    outputs: Annotated[dict[str, Any], _merge]  # step -> text, or {branch: text} for a fan-out step
    items: Annotated[dict[str, list[str]], _merge]  # step -> the list a fan-out successor runs over
    decisions: Annotated[dict[str, str | None], _merge]
    counts: Annotated[dict[str, int], _merge]  # step -> runs so far (a fan-out counts once)
    loops: Annotated[dict[str, int], _merge]  # "a->b" -> times taken
    routes: Annotated[dict[str, str | None], _merge]  # step -> loop target it chose, if any
    messages: Annotated[list[dict[str, Any]], operator.add]  # the transcript every agent adds to


class BranchState(PipelineState, total=False):
    item: str
    branch: int


def _bound(loop: Loop, ctx: AgentContext) -> int:
    override = ctx.options.max_rounds
    return int(override) if override is not None else (loop.max_rounds or 0)


def _as_text(value: Any) -> str:
    if isinstance(value, dict):
        return "\n\n".join(str(value[k]) for k in sorted(value))
    return "" if value is None else str(value)


def parse_items(text: str) -> list[str]:
    """A numbered or bulleted list in ``text``, else its non-empty lines."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    listed = [m.group(1).strip() for ln in lines if (m := re.match(r"^(?:\d{1,2}[.)]|[-*•])\s+(.+)$", ln))]
    return listed or lines
