"""An optional pairwise judge for `vivace bench sot`: SoT's answer against normal decoding's, win/tie/lose.

Why optional and external: a judge is only worth its verdicts when it is
stronger than the model judged; this machine has none, so the judge is any
OpenAI-compatible endpoint the user names (``--judge-base-url``,
``--judge-model``). Coverage (``vivace_bench.coverage``) stays the offline
quality figure.

Position bias is the known failure of LLM judges, so each pair is judged
twice, once in each order: SoT wins only when it wins both times, loses only
when it loses both, and anything else is a tie. A verdict the judge did not
give in the asked format counts as neither (``unparsed``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from vivace.runtime.prompts import render

PROMPT = "judge_pairwise"
_VERDICT = re.compile(r"^\s*(?:verdict\s*:?\s*)?\**\s*(A|B|tie)\b", re.IGNORECASE)
JUDGE_TOKENS = 64


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'tie' from the judge's reply (which continues the prefill "Verdict:")."""
    match = _VERDICT.match(text)
    if not match:
        return None
    word = match.group(1)
    return "tie" if word.lower() == "tie" else word.upper()


async def _ask(backend: Any, question: str, a: str, b: str) -> str | None:
    from vivace.runtime.call import Call, complete

    messages, prefill = render(PROMPT, "vivace_bench", question=question, answer_a=a, answer_b=b)
    result = await complete(backend, Call(messages=messages, prefill=prefill, max_tokens=JUDGE_TOKENS,
                                          temperature=0.0, repetition_penalty=1.0, node="judge"))
    return parse_verdict(result.text)


async def judge_pair(backend: Any, question: str, normal: str, sot: str) -> dict[str, Any]:
    """Both orders at once; the outcome for SoT ('win', 'tie', 'lose') or 'unparsed'."""
    first, second = await asyncio.gather(_ask(backend, question, sot, normal), _ask(backend, question, normal, sot))
    if first is None or second is None:
        outcome = "unparsed"
    elif first == "A" and second == "B":
        outcome = "win"
    elif first == "B" and second == "A":
        outcome = "lose"
    else:
        outcome = "tie"
    return {"outcome": outcome, "sot_first": first, "normal_first": second}


def tally(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """Win/tie/lose counts and the win rate among parsed verdicts (ties count half)."""
    counts = {k: sum(1 for v in verdicts if v["outcome"] == k) for k in ("win", "tie", "lose", "unparsed")}
    parsed = counts["win"] + counts["tie"] + counts["lose"]
    score = (counts["win"] + 0.5 * counts["tie"]) / parsed if parsed else None
    return {**counts, "n": len(verdicts), "sot_score": round(score, 4) if score is not None else None}
