"""Long contexts and many agents: how many concurrent long-context tasks a KV budget holds, and their speed.

The other reason to quantize the KV cache: at a fixed KV budget, every task
with a ``context``-token window pins that many tokens of cache for its whole
life, so the budget (not compute) caps how many agents run at once. The count
is the engine's own KV capacity divided by the per-task window; the measured
round then runs exactly that many tasks at once, each with its own context
(slices of the evaluation text at different offsets, so no prefix is shared
and the prefix cache cannot fake the capacity).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

_TEMPLATE_MARGIN = 64  # chat-template tokens around the context


def tasks_that_fit(kv_capacity_tokens: int | None, context: int) -> int | None:
    """Concurrent tasks of ``context`` tokens (prompt and output) that the KV cache holds at once."""
    if not kv_capacity_tokens or context <= 0:
        return None
    return kv_capacity_tokens // context


def _contexts(token_ids: list[int], tokenizer: Any, n: int, length: int) -> list[str]:
    """``n`` distinct texts of about ``length`` tokens: the text rotated to a different start for each."""
    if not token_ids:
        raise ValueError("no text to build contexts from")
    step = max(1, len(token_ids) // max(n, 1))
    out = []
    for i in range(n):
        start = (i * step) % len(token_ids)
        ids = (token_ids[start:] + token_ids[:start]) * (1 + length // len(token_ids))
        out.append(tokenizer.decode(ids[:length]))
    return out


async def measure_agents(backend: Any, token_ids: list[int], context: int, out_tokens: int) -> dict[str, Any]:
    """Run as many ``context``-token tasks at once as the KV budget holds; their total decode speed."""
    from vivace.runtime import Call, complete

    n = tasks_that_fit(backend.kv_capacity_tokens, context)
    if not n:
        return {"agents": 0, "agents_context": context}
    prompt_len = max(16, context - out_tokens - _TEMPLATE_MARGIN)
    texts = _contexts(token_ids, backend.tokenizer, n, prompt_len)
    calls = [
        Call(messages=[{"role": "user", "content": f"{text}\n\nSummarize the text above in one paragraph."}],
             max_tokens=out_tokens, ignore_eos=True, tag="bench-agents")
        for text in texts
    ]
    results = await asyncio.gather(*(complete(backend, c) for c in calls))
    wall = max(r.ended_at for r in results) - min(r.started_at for r in results)
    out = sum(r.output_tokens for r in results)
    return {
        "agents": n,
        "agents_context": context,
        "agents_prompt_tokens": max(r.prompt_tokens for r in results),
        "agents_tok_s": out / wall if wall > 0 else None,
        "agents_wall_s": wall,
    }
