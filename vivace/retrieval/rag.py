"""Retrieval-augmented prompts as the context benchmark builds them, method by method.

Why beside the context policy (``vivace.retrieval.policy``): the policy
decides per call what a run's calls get; the benchmark instead forces each
method (stuff everything, retrieve, retrieve and compress) on the same
questions to measure them side by side, with the same templates and the same
cost-model record.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from vivace.compression.budget import PromptCompressor, backend_counter
from vivace.compression.cost import CostModel, Decision, get_cost_model
from vivace.config import Config
from vivace.runtime.backend import Backend, Message
from vivace.runtime.prompts import load_text

if TYPE_CHECKING:  # Chroma and the embedder load on first use
    from vivace.retrieval.store import Chunk, Store

log = logging.getLogger(__name__)

MIN_COMPRESS_TOKENS = 128  # below this no compression can save a measurable prefill
DEFAULT_RATIO = 2.0


def load_prompt(name: str) -> str:
    """A plain template from ``vivace/retrieval/prompts/<name>.txt`` (package data)."""
    return load_text(name, "vivace.retrieval")


def build_messages(question: str, context: str) -> list[Message]:
    """The chat for a context-grounded question (same template for every method)."""
    return [
        {"role": "system", "content": load_prompt("rag_system").strip()},
        {"role": "user", "content": load_prompt("rag").format(context=context.strip(), question=question.strip()).strip()},
    ]


def format_context(chunks: list[Chunk]) -> str:
    """Chunks joined by blank lines (a sentence boundary, so compression never merges two)."""
    return "\n\n".join(c.text.strip() for c in chunks)


def make_compressor(backend: Backend, config: Config) -> PromptCompressor:
    """A compressor counting tokens as ``backend`` does (it holds the scorer and the embedder: keep it)."""
    from vivace.retrieval.embedder import VivaceEmbedder

    return PromptCompressor(backend_counter(backend), VivaceEmbedder(config.embedder or None), home=config.home)


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
    comp = compressor or make_compressor(backend, config)
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
    compressor: PromptCompressor | None = None,
) -> tuple[str, dict[str, Any]]:
    """Retrieve top-k, compress if the cost model says it pays: the context text and its record."""
    t0 = time.perf_counter()
    if store is None:
        from vivace.retrieval.store import Store

        store = Store(config)
    k = k or config.retrieval_k
    chunks = await asyncio.to_thread(store.retrieve, question, k, collection, where)
    retrieval_s = time.perf_counter() - t0
    context, compression = await compress_context(format_context(chunks), question, config, backend, cost_model=cost_model,
                                                   compressor=compressor)
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
    compressor: PromptCompressor | None = None,
) -> tuple[list[Message], dict[str, Any]]:
    """Messages to send for ``question`` and the stats for the CallTrace ``extra``.

    Without a collection the question goes alone. A missing collection is an
    ``InputError`` naming the ones that exist.
    """
    if not collection:
        return [{"role": "user", "content": question}], {}
    context, stats = await retrieve_context(question, config, backend, collection, k, where, store, cost_model, compressor)
    return build_messages(question, context), stats

