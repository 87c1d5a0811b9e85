"""The history handed from one agent to the next, and the one hook that fits it into a budget.

Why here and not in each agent: every step of a pipeline gets its upstream
outputs the same way, so one function decides when a long history (ten
researchers' notes, a draft and its critique) goes through the compression
package before the next agent sees it. The budget is
``AgentContext.history_budget_tokens``; under it the text passes unchanged
and nothing is paid.
"""

from __future__ import annotations

import logging
from typing import Any

from vivace.agents.base import AgentContext

log = logging.getLogger(__name__)


def render_history(inputs: dict[str, Any], step: str) -> str:
    """Upstream outputs as one text, a heading per source (the step's own earlier output is its draft)."""
    parts: list[str] = []
    for source, value in inputs.items():
        label = f"{source} (your previous version)" if source == step else source
        if isinstance(value, list):
            parts += [f"## {label}, part {i}\n{text.strip()}" for i, text in enumerate(value, 1) if str(text).strip()]
        elif str(value).strip():
            parts.append(f"## {label}\n{str(value).strip()}")
    return "\n\n".join(parts)


async def fit_history(text: str, query: str, ctx: AgentContext) -> tuple[str, dict[str, Any] | None]:
    """``text`` within the history budget: unchanged when it fits, else compressed (stats returned).

    A compressor that cannot run (no scorer model, say) leaves the history as it
    is with a warning: a longer prompt is better than a failed run.
    """
    if not text:
        return text, None
    budget = ctx.history_budget_tokens
    tokens = await ctx.backend.count_tokens([{"role": "user", "content": text}])
    if budget <= 0 or tokens <= budget:
        return text, None
    try:
        from vivace.compression import acompress_history

        compressor = ctx.compressor
        if compressor is None:
            from vivace.retrieval.rag import compressor_for

            compressor = ctx.compressor = compressor_for(ctx.backend, ctx.config)
        out, stats = await acompress_history(text, query, budget, compressor=compressor)
    except Exception as exc:
        log.warning("history of %d tokens over the %d-token budget left uncompressed: %s", tokens, budget, exc)
        return text, {"method": "failed", "original_tokens": tokens, "error": str(exc)}
    log.debug("history compressed from %d tokens: %s", tokens, stats)
    return out, stats
