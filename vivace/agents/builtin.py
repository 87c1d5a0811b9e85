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
from typing import Any

from vivace.agents.base import AgentContext, NodeResult, StepInput, task_text
from vivace.agents.pipeline.spec import Loop, Pipeline, Step
from vivace.agents.registry import REGISTRY, agent
from vivace.agents.sot.controller import SotAgent
from vivace.agents.tools_agent import ToolsAgent

log = logging.getLogger(__name__)

PLANNER_MAX_ITEMS = 4
RESEARCH_TOKENS = 128
CRITIC_TOKENS = 80  # a JSON verdict with a one-sentence fix
PLAN_ITEM_CHARS = 60
RESEARCH_ROUNDS = 1
SUMMARY_TOKENS = 128
FACT_TOKENS = 80


@agent("answer", description="One model call (the call path retrieves and compresses first with --collection).")
async def answer(inp: StepInput, ctx: AgentContext) -> str:
    from vivace.agents.sot.long_form import record_answer, sot_answer

    task = inp.get("item") or inp.get("task", "")
    if expanded := await sot_answer(ctx, task, inp.get("history") or ""):
        return expanded
    messages, prefill = ctx.render("agent_answer", task=task_text(inp))
    result = await ctx.call(messages, prefill=prefill)
    record_answer(ctx, task, result)
    return result.text.strip()


REGISTRY.register(SotAgent(), "built-in")
REGISTRY.register(ToolsAgent(), "built-in")


def plan_schema(n: int) -> dict[str, Any]:
    """The planner's reply: 2 to ``n`` short aspects, each a bounded string."""
    aspect = {"type": "string", "minLength": 3, "maxLength": PLAN_ITEM_CHARS}
    return {"type": "object", "properties": {"aspects": {"type": "array", "items": aspect, "minItems": 2,
                                                         "maxItems": n}},
            "required": ["aspects"], "additionalProperties": False}


@agent("planner", description="Splits the task into sub-questions: the list a fan-out step runs over.")
async def planner(inp: StepInput, ctx: AgentContext) -> NodeResult:
    """The plan is decoded under a schema (2 to n aspects), so it always parses; repeats are dropped after.

    A small model still repeats one aspect ("Transportation" twice), which
    leaves one researcher. Such a plan is asked for once more, told what
    repeated, with a mild repetition penalty: under the grammar the penalty
    cannot collapse the list (it does in free text, see ENVIRONMENT.md).
    """
    n = max(2, int(ctx.options.max_branches or PLANNER_MAX_ITEMS))
    messages, _ = ctx.render("research_planner", task=task_text(inp), max_items=n)
    result = await ctx.call(messages, output=plan_schema(n), max_tokens=24 * n + 16, repetition_penalty=1.0)
    items = _aspects(result.parsed["aspects"], n)
    if len(items) < 2:
        again = [*messages, {"role": "assistant", "content": result.text},
                 {"role": "user", "content": f"That list repeats {items[0]!r}. Write 2 to {n} different aspects."}]
        more = await ctx.call(again, output=plan_schema(n), max_tokens=24 * n + 16, repetition_penalty=1.15)
        items = _aspects([*items, *more.parsed["aspects"]], n)
    items = items or [inp.get("item") or inp.get("task", "")]
    return NodeResult("\n".join(f"{i}. {q}" for i, q in enumerate(items, 1)), items=tuple(items))


def _aspects(aspects: list[str], n: int) -> list[str]:
    """The plan's aspects, cleaned, each once (case and punctuation aside), at most ``n``."""
    from vivace.agents.sot.skeleton import parse_skeleton

    listed = "\n".join(f"{i}. {a}" for i, a in enumerate(aspects, 1))
    return parse_skeleton(listed, max_points=n, min_points=1).points


@agent("researcher", description="Answers one sub-question in a few sentences (retrieves with --collection).")
async def researcher(inp: StepInput, ctx: AgentContext) -> str:
    item = inp.get("item") or inp.get("task", "")
    messages, prefill = ctx.render("research_researcher", task=inp.get("task", ""), item=item)
    result = await ctx.call(messages, prefill=prefill, max_tokens=RESEARCH_TOKENS)
    return result.text.strip()


@agent("writer", description="Writes the answer from the notes it is handed (and fixes what a critique says).",
       needs_input=True)
async def writer(inp: StepInput, ctx: AgentContext) -> str:
    from vivace.agents.sot.long_form import record_answer, sot_answer

    if expanded := await sot_answer(ctx, inp.get("task", ""), inp.get("history") or ""):
        return expanded  # the router said SoT pays for this answer (recorded on the step run)
    messages, prefill = ctx.render("research_writer", task=inp.get("task", ""),
                                   history=inp.get("history") or "(no notes)")
    result = await ctx.call(messages, prefill=prefill)
    record_answer(ctx, inp.get("task", ""), result)
    return result.text.strip()


CRITIC_SCHEMA = {"type": "object", "properties": {"verdict": {"enum": ["approve", "revise"]},
                                                  "fix": {"type": "string", "maxLength": 200}},
                 "required": ["verdict", "fix"], "additionalProperties": False}


@agent("critic", description="Reviews the answer it is handed: APPROVE, or REVISE with what to fix.",
       needs_input=True)
async def critic(inp: StepInput, ctx: AgentContext) -> NodeResult:
    """The verdict is decoded under a schema: the loop reads a field, not a keyword in free text."""
    messages, _ = ctx.render("research_critic", task=inp.get("task", ""), history=inp.get("history") or task_text(inp))
    result = await ctx.call(messages, output=CRITIC_SCHEMA, max_tokens=CRITIC_TOKENS, repetition_penalty=1.0)
    decision, fix = result.parsed["verdict"], " ".join(str(result.parsed["fix"]).split())
    return NodeResult("APPROVE" if decision == "approve" else f"REVISE: {fix}".rstrip(": "), decision=decision)


@agent("documents", description="Lists the documents in its folder (params = { folder = \"...\" }) as the items a "
       "fan-out step runs over; no model call.")
async def documents(inp: StepInput, ctx: AgentContext) -> NodeResult:
    from vivace.agents.documents import read_documents

    docs = read_documents(inp.get("params") or {})
    return NodeResult("\n".join(name for name, _ in docs), items=tuple(text for _, text in docs))


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
