"""Retrieve, then compress if it pays, then hand back the chat messages: what runs before a call.

Why one function: ``vivace ask --rag``, the answer and SoT agents and the
context benchmark all need the same sequence and the same record of it, so
the CallTrace ``extra`` of every call says what was retrieved, whether the
cost model compressed, and what it predicted against what it cost.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from functools import lru_cache
from importlib import resources
from typing import Any

from vivace.compression.budget import PromptCompressor, backend_counter
from vivace.compression.cost import CostModel, Decision, backend_key, get_cost_model
from vivace.config import Config
from vivace.runtime.backend import Backend, Message
from vivace.retrieval.embedder import VivaceEmbedder
from vivace.retrieval.store import Chunk, Store

log = logging.getLogger(__name__)

MIN_COMPRESS_TOKENS = 128  # below this no compression can save a measurable prefill
DEFAULT_RATIO = 2.0
_compressors: dict[str, PromptCompressor] = {}


@lru_cache(maxsize=None)
def load_prompt(name: str) -> str:
    """A template from ``vivace/retrieval/prompts/<name>.txt`` (package data)."""
    return resources.files("vivace.retrieval").joinpath("prompts", f"{name}.txt").read_text()


def build_messages(question: str, context: str) -> list[Message]:
    """The chat for a context-grounded question (same template for every method)."""
    return [
        {"role": "system", "content": load_prompt("rag_system").strip()},
        {"role": "user", "content": load_prompt("rag").format(context=context.strip(), question=question.strip()).strip()},
    ]


def format_context(chunks: list[Chunk]) -> str:
    """Chunks joined by blank lines (a sentence boundary, so compression never merges two)."""
    return "\n\n".join(c.text.strip() for c in chunks)


def compressor_for(backend: Backend, config: Config) -> PromptCompressor:
    """One compressor per backend per process (it holds the scorer and the embedder)."""
    key = backend_key(backend)
    if key not in _compressors:
        _compressors[key] = PromptCompressor(
            backend_counter(backend, config.home),
            VivaceEmbedder(config.embedder) if config.embedder else None,
            home=config.home,
        )
    return _compressors[key]


async def compress_context(
    context: str,
    question: str,
    config: Config,
    backend: Backend,
    mode: str | None = None,
    ratio: float | None = None,
    method: str | None = None,
    cost_model: CostModel | None = None,
    compressor: PromptCompressor | None = None,
) -> tuple[str, dict[str, Any]]:
    """Apply the cost model's decision to ``context``; the dict is the decision plus what happened."""
    mode = mode or config.compression
    ratio = ratio or float(getattr(config, "compression_ratio", DEFAULT_RATIO))
    comp = compressor or compressor_for(backend, config)
    original = comp.count(context)
    target = math.ceil(original / ratio)
    if mode == "off" or original < MIN_COMPRESS_TOKENS:
        why = "compression is off" if mode == "off" else f"context under {MIN_COMPRESS_TOKENS} tokens"
        decision = Decision(False, "none", original, original, 0.0, 0.0, why, mode)
    else:
        # Same target, same saving: the cheapest plan wins, which is coarse unless a method is forced.
        plans = (method,) if method and method != "auto" else ("coarse",)
        model = cost_model or await get_cost_model(backend, config.home, comp, fine=any("fine" in p for p in plans))
        decision = model.decide(original, target, mode, config.compression_margin_s, plans)
    out = context
    if decision.compress:
        t0 = time.perf_counter()
        how = "auto" if decision.method == "coarse" and not method else decision.method  # auto: fine fallback
        out, stats = await asyncio.to_thread(comp.compress, context, question, target, how)
        decision.actual_s = time.perf_counter() - t0
        decision.compressed_tokens = stats.compressed_tokens
        info = decision.to_dict() | {"ratio": stats.ratio, "stages": stats.stages}
    else:
        decision.compressed_tokens = original
        info = decision.to_dict() | {"ratio": 1.0}
    return out, info


async def retrieve_context(
    question: str,
    config: Config,
    backend: Backend,
    collection: str,
    k: int | None = None,
    where: dict[str, Any] | None = None,
    store: Store | None = None,
    cost_model: CostModel | None = None,
) -> tuple[str, dict[str, Any]]:
    """Retrieve top-k, compress if the cost model says it pays: the context text and its record."""
    t0 = time.perf_counter()
    store = store or Store(config)
    k = k or config.retrieval_k
    chunks = await asyncio.to_thread(store.retrieve, question, k, collection, where)
    retrieval_s = time.perf_counter() - t0
    context, compression = await compress_context(format_context(chunks), question, config, backend, cost_model=cost_model)
    stats = {
        "collection": collection,
        "k": k,
        "retrieval_s": round(retrieval_s, 6),
        "chunks": [{"id": c.id, "source": c.source, "score": round(c.score, 4)} for c in chunks],
        "compression": compression,
        "overhead_s": round(time.perf_counter() - t0, 6),
    }
    log.debug("rag context for %r: %s", question[:60], stats)
    return context, stats


async def prepare_context(
    question: str,
    config: Config,
    backend: Backend,
    collection: str | None,
    k: int | None = None,
    where: dict[str, Any] | None = None,
    store: Store | None = None,
    cost_model: CostModel | None = None,
) -> tuple[list[Message], dict[str, Any]]:
    """Messages to send for ``question`` and the stats for the CallTrace ``extra``.

    Without a collection the question goes alone. A missing collection is an
    ``InputError`` naming the ones that exist.
    """
    if not collection:
        return [{"role": "user", "content": question}], {}
    context, stats = await retrieve_context(question, config, backend, collection, k, where, store, cost_model)
    return build_messages(question, context), stats

