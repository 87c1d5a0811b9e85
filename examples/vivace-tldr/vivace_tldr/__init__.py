"""An example vivace agent plug-in: ``tldr`` (a one-sentence summary and keywords, in parallel).

The entry point ``tldr = "vivace_tldr:TldrAgent"`` in pyproject.toml is what
vivace discovers. ``build(ctx)`` returns an async node: it gets a
``StepInput`` (task, upstream history, fan-out item) and returns its output.
Calls go through ``ctx.call`` so they are streamed, traced and attributed to
this agent, and pass the process-wide in-flight limit.
"""

from __future__ import annotations

import asyncio

from vivace import Agent, AgentContext, Node, StepInput, task_text

__version__ = "0.1.0"
PACKAGE = "vivace_tldr"  # prompts are package data: vivace_tldr/prompts/*.txt


class TldrAgent(Agent):
    name = "tldr"
    description = "One-sentence summary plus three keywords of its input (two calls in parallel)."

    def build(self, ctx: AgentContext) -> Node:
        async def node(inp: StepInput) -> str:
            text = task_text(inp)
            summary_msgs, summary_prefill = ctx.render("tldr_summary", package=PACKAGE, text=text)
            keyword_msgs, keyword_prefill = ctx.render("tldr_keywords", package=PACKAGE, text=text)
            summary, keywords = await asyncio.gather(
                ctx.call(summary_msgs, prefill=summary_prefill, max_tokens=64, stop=["\n\n"]),
                ctx.call(keyword_msgs, prefill=keyword_prefill, max_tokens=24, stop=["\n"]),
            )
            return f"{summary.text.strip()}\nKeywords: {keywords.text.strip()}"

        return node
