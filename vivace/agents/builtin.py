"""Built-in agents: ``answer``, ``sot``, and ``research`` (planner -> researchers -> writer -> critic).

Why these: ``answer`` is the plain single call, ``sot`` is the
Skeleton-of-Thought controller as one step, and ``research`` shows what a pipeline buys: the researchers are
independent, so they run as one fan-out superstep that the engine batches,
and their prompts put the shared part (instructions, main task) first and the
sub-question last, so the prefix cache serves the common part. The research
stages are registered too, for use in pipeline files. None of them retrieves
or compresses by hand: with a collection, the call path does it before every
call, with that call's own query.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from vivace.agents.base import AgentContext, StepInput, task_text
from vivace.agents.pipeline import Loop, Pipeline, Step
from vivace.agents.registry import REGISTRY, agent
from vivace.agents.sot import SotAgent
from vivace.agents.tools_agent import ToolsAgent

log = logging.getLogger(__name__)

PLANNER_MAX_ITEMS = 4
RESEARCH_TOKENS = 128
CRITIC_TOKENS = 48
RESEARCH_ROUNDS = 1
SUMMARY_TOKENS = 128
FACT_TOKENS = 80


@agent("answer", description="One model call (the call path retrieves and compresses first with --collection).")
async def answer(inp: StepInput, ctx: AgentContext) -> str:
    from vivace.agents.long_form import record_answer, sot_answer

    task = inp.get("item") or inp.get("task", "")
    if expanded := await sot_answer(ctx, task, inp.get("history") or ""):
        return expanded
    messages, prefill = ctx.render("agent_answer", task=task_text(inp))
    result = await ctx.call(messages, prefill=prefill)
    record_answer(ctx, task, result)
    return result.text.strip()


REGISTRY.register(SotAgent(), "built-in")
REGISTRY.register(ToolsAgent(), "built-in")


@agent("planner", description="Splits the task into sub-questions: a numbered list a fan-out step runs over.")
async def planner(inp: StepInput, ctx: AgentContext) -> dict[str, Any]:
    from vivace.agents.skeleton import parse_skeleton

    n = max(2, int(ctx.options.get("max_branches") or PLANNER_MAX_ITEMS))
    messages, prefill = ctx.render("research_planner", task=task_text(inp), max_items=n)
    # No repetition penalty: it collapses a numbered list (see ENVIRONMENT.md).
    result = await ctx.call(messages, prefill=prefill, max_tokens=20 * n + 16, repetition_penalty=1.0,
                            stop=["\n\n", f"\n{n + 1}."])
    points = parse_skeleton((prefill or "") + result.text, max_points=n, min_points=1).points
    if len(points) == 1:
        points = await _continue_plan(ctx, messages, points, n)
    items = points or [inp.get("item") or inp.get("task", "")]
    if not points:
        log.info("planner found no list in %r; one researcher gets the whole task", result.text[:80])
    return {"output": "\n".join(f"{i}. {q}" for i, q in enumerate(items, 1)), "items": items}


async def _continue_plan(ctx: AgentContext, messages: list[Any], points: list[str], n: int) -> list[str]:
    """A plan of one item, continued once from that item with a mild repetition penalty.

    Why: a small model often ends its list after one item, or repeats that
    item on every line ("1. Transportation\n2. Transportation..."), which
    leaves one researcher and nothing to run in parallel. Continuing from
    "2." with a penalty of 1.15 gets past the repeat; a full penalty from the
    start collapses the list instead. On 40 tasks with the embedded model,
    the one-item plans went from 5 to 0.
    """
    from vivace.agents.skeleton import parse_skeleton

    listed = "".join(f"{i}. {p}\n" for i, p in enumerate(points, 1)) + f"{len(points) + 1}."
    more = await ctx.call(messages, prefill=listed, max_tokens=20 * (n - len(points)) + 12, repetition_penalty=1.15,
                          stop=["\n\n", f"\n{n + 1}."])
    return parse_skeleton(listed + more.text, max_points=n, min_points=1).points or points


@agent("researcher", description="Answers one sub-question in a few sentences (retrieves with --collection).")
async def researcher(inp: StepInput, ctx: AgentContext) -> str:
    item = inp.get("item") or inp.get("task", "")
    messages, prefill = ctx.render("research_researcher", task=inp.get("task", ""), item=item)
    result = await ctx.call(messages, prefill=prefill, max_tokens=RESEARCH_TOKENS)
    return result.text.strip()


@agent("writer", description="Writes the answer from the notes it is handed (and fixes what a critique says).",
       needs_input=True)
async def writer(inp: StepInput, ctx: AgentContext) -> str:
    from vivace.agents.long_form import record_answer, sot_answer

    if expanded := await sot_answer(ctx, inp.get("task", ""), inp.get("history") or ""):
        return expanded  # the router said SoT pays for this answer (recorded on the step run)
    messages, prefill = ctx.render("research_writer", task=inp.get("task", ""),
                                   history=inp.get("history") or "(no notes)")
    result = await ctx.call(messages, prefill=prefill)
    record_answer(ctx, inp.get("task", ""), result)
    return result.text.strip()


@agent("critic", description="Reviews the answer it is handed: APPROVE, or REVISE with what to fix.",
       needs_input=True)
async def critic(inp: StepInput, ctx: AgentContext) -> dict[str, Any]:
    messages, prefill = ctx.render("research_critic", task=inp.get("task", ""),
                                   history=inp.get("history") or task_text(inp))
    result = await ctx.call(messages, prefill=prefill, max_tokens=CRITIC_TOKENS, stop=["\n\n"])
    return {"output": result.text.strip(), "decision": verdict(result.text)}


@agent("documents", description="Lists the documents in its folder (params = { folder = \"...\" }) as the items a "
       "fan-out step runs over; no model call.")
async def documents(inp: StepInput, ctx: AgentContext) -> dict[str, Any]:
    from vivace.agents.documents import read_documents

    docs = read_documents(inp.get("params") or {})
    return {"output": "\n".join(name for name, _ in docs), "items": [text for _, text in docs]}


@agent("summarizer", description="Summarizes the one document it is handed, for the task (a map step).")
async def summarizer(inp: StepInput, ctx: AgentContext) -> str:
    messages, prefill = ctx.render("doc_summarize", task=inp.get("task", ""), document=inp.get("item") or "")
    result = await ctx.call(messages, prefill=prefill, max_tokens=SUMMARY_TOKENS)
    return result.text.strip()


@agent("extractor", description="Turns the summary it is handed into the 3 facts that matter for the task.",
       needs_input=True)
async def extractor(inp: StepInput, ctx: AgentContext) -> str:
    summary = "\n\n".join(str(v) for v in (inp.get("inputs") or {}).values()) or inp.get("item") or ""
    messages, prefill = ctx.render("doc_facts", task=inp.get("task", ""), summary=summary)
    result = await ctx.call(messages, prefill=prefill, max_tokens=FACT_TOKENS, stop=["\n\n"])
    return ((prefill or "") + result.text).strip()


def verdict(text: str) -> str:
    """``revise`` when the critic asks for a revision near the start of its reply, else ``approve``."""
    head = text.strip()[:60]
    if re.search(r"\bapprove", head, re.IGNORECASE) and not re.search(r"\brevise", head, re.IGNORECASE):
        return "approve"
    return "revise" if re.search(r"\brevis|\bfix\b|\bincorrect|\bmissing", head, re.IGNORECASE) else "approve"


def research_pipeline(max_branches: int = PLANNER_MAX_ITEMS, max_rounds: int = RESEARCH_ROUNDS) -> Pipeline:
    """planner -> N researchers in parallel -> writer -> critic, with at most ``max_rounds`` revisions."""
    return Pipeline(
        "research",
        [
            Step("plan", "planner"),
            Step("research", "researcher", fan_out=True, max_branches=max_branches),
            Step("write", "writer"),
            Step("review", "critic"),
        ],
        edges=[("plan", "research"), ("research", "write"), ("write", "review")],
        loops=[Loop("review", "write", when="revise", max_rounds=max_rounds)],
        output="write",
        description=f"planner -> up to {max_branches} researchers in parallel -> writer -> critic "
        f"(at most {max_rounds} revision round{'s' if max_rounds != 1 else ''})",
    )


REGISTRY.register(research_pipeline(), "built-in")
