"""Built-in agents: ``answer``, ``sot``, and ``research`` (planner -> researchers -> writer -> critic).

Why these: ``answer`` is the plain single call (with retrieval when a
collection is given), ``sot`` is the Skeleton-of-Thought controller as one
step, and ``research`` shows what a pipeline buys: the researchers are
independent, so they run as one fan-out superstep that the engine batches,
and their prompts put the shared part (instructions, main task) first and the
sub-question last, so the prefix cache serves the common part. The research
stages are registered too, for use in pipeline files.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from vivace.agents.base import Agent, AgentContext, AgentDelta, Node, StepInput, agent, current_step, task_text
from vivace.agents.pipeline import Loop, Pipeline, Step
from vivace.agents.registry import REGISTRY

log = logging.getLogger(__name__)

PLANNER_MAX_ITEMS = 4
RESEARCH_TOKENS = 128
CRITIC_TOKENS = 48
RESEARCH_ROUNDS = 1


async def _rag_messages(question: str, ctx: AgentContext) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Retrieve (and compress if it pays) for ``question`` from the run's collection."""
    from vivace.retrieval.rag import prepare_context

    return await prepare_context(question, ctx.config, ctx.backend, ctx.collection, store=ctx.store())


@agent("answer", description="One model call; with --collection it retrieves and compresses the context first.")
async def answer(inp: StepInput, ctx: AgentContext) -> str:
    question = task_text(inp)
    if ctx.collection:
        messages, rag = await _rag_messages(question, ctx)
        result = await ctx.call(messages, rag=rag)
    else:
        messages, prefill = ctx.render("agent_answer", task=question)
        result = await ctx.call(messages, prefill=prefill)
    return result.text.strip()


class SotAgent(Agent):
    """The Skeleton-of-Thought controller (router, skeleton, parallel points) as one agent."""

    name = "sot"
    description = "Skeleton-of-Thought controller: a skeleton, then its points expanded in parallel."

    def build(self, ctx: AgentContext) -> Node:
        async def node(inp: StepInput) -> str:
            from vivace.agents import AnswerDelta, BranchDelta, answer_question
            from vivace.agents.sot import ControllerError

            run = current_step()
            step, name = (run.step, run.agent) if run else ("sot", self.name)

            def forward(event: Any) -> None:
                if isinstance(event, (AnswerDelta, BranchDelta)):
                    ctx.tracer.emit(AgentDelta(ctx.tracer.run_id, step=step, agent=name, text=event.text,
                                               branch=getattr(event, "index", None)))

            def keep(calls: list[Any]) -> None:
                for call in calls:
                    call.node, call.agent = f"{step}/{call.node}", name
                    ctx.tracer.record(call, run)

            try:
                trace = await answer_question(
                    task_text(inp), ctx.backend,
                    mode=str(ctx.options.get("mode") or ctx.config.mode),
                    max_tokens=ctx.config.max_tokens,
                    temperature=ctx.config.temperature,
                    repetition_penalty=ctx.config.repetition_penalty,
                    max_points=ctx.config.sot_max_points,
                    on_event=forward,
                )
            except ControllerError as exc:
                keep(exc.trace.calls if exc.trace is not None else [])
                raise
            keep(trace.calls)
            return trace.answer

        return node


REGISTRY.register(SotAgent(), "built-in")


@agent("planner", description="Splits the task into sub-questions: a numbered list a fan-out step runs over.")
async def planner(inp: StepInput, ctx: AgentContext) -> dict[str, Any]:
    from vivace.agents.skeleton import parse_skeleton

    n = max(2, int(ctx.options.get("max_branches") or PLANNER_MAX_ITEMS))
    messages, prefill = ctx.render("research_planner", task=task_text(inp), max_items=n)
    # No repetition penalty: it collapses a numbered list (see ENVIRONMENT.md).
    result = await ctx.call(messages, prefill=prefill, max_tokens=20 * n + 16, repetition_penalty=1.0,
                            stop=["\n\n", f"\n{n + 1}."])
    points = parse_skeleton((prefill or "") + result.text, max_points=n).points
    items = points or [inp.get("item") or inp.get("task", "")]
    if not points:
        log.info("planner found no list in %r; one researcher gets the whole task", result.text[:80])
    return {"output": "\n".join(f"{i}. {q}" for i, q in enumerate(items, 1)), "items": items}


@agent("researcher", description="Answers one sub-question in a few sentences (retrieves with --collection).")
async def researcher(inp: StepInput, ctx: AgentContext) -> str:
    item = inp.get("item") or inp.get("task", "")
    if ctx.collection:
        messages, rag = await _rag_messages(item, ctx)
        result = await ctx.call(messages, max_tokens=RESEARCH_TOKENS, rag=rag)
    else:
        messages, prefill = ctx.render("research_researcher", task=inp.get("task", ""), item=item)
        result = await ctx.call(messages, prefill=prefill, max_tokens=RESEARCH_TOKENS)
    return result.text.strip()


@agent("writer", description="Writes the answer from the notes it is handed (and fixes what a critique says).",
       needs_input=True)
async def writer(inp: StepInput, ctx: AgentContext) -> str:
    messages, prefill = ctx.render("research_writer", task=inp.get("task", ""),
                                   history=inp.get("history") or "(no notes)")
    result = await ctx.call(messages, prefill=prefill)
    return result.text.strip()


@agent("critic", description="Reviews the answer it is handed: APPROVE, or REVISE with what to fix.",
       needs_input=True)
async def critic(inp: StepInput, ctx: AgentContext) -> dict[str, Any]:
    messages, prefill = ctx.render("research_critic", task=inp.get("task", ""),
                                   history=inp.get("history") or task_text(inp))
    result = await ctx.call(messages, prefill=prefill, max_tokens=CRITIC_TOKENS, stop=["\n\n"])
    return {"output": result.text.strip(), "decision": verdict(result.text)}


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
