"""The history handed from one agent to the next.

Why here and not in each agent: every step of a pipeline gets its upstream
outputs the same way. Whether a long history (ten researchers' notes, a
draft and its critique) is compressed is not decided here but per call, by
the call path's context policy, priced for the prompt that carries it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vivace.runtime.backend import Backend, Message


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


async def fit_turns(turns: list[dict[str, Any]], backend: "Backend", budget_tokens: int) -> tuple[list["Message"], int]:
    """A thread's turns as chat messages, the newest that fit ``budget_tokens``; and how many turns were left out.

    Why newest first: a follow-up refers to what was just said. What is kept
    may still be compressed per call by the context policy, when that pays.
    """
    kept: list["Message"] = []
    for turn in reversed(turns):
        pair: list["Message"] = [{"role": "user", "content": str(turn.get("user", ""))},
                                 {"role": "assistant", "content": str(turn.get("assistant", ""))}]
        if await backend.count_tokens([*pair, *kept]) > budget_tokens:
            break
        kept = [*pair, *kept]
    return kept, len(turns) - len(kept) // 2
