"""The context policy the assembly plugs into the call path: retrieve per call, compress where it pays.

Why per call: the skeleton, each SoT point, the planner, each researcher, the
writer and the critic ask different things, so each retrieves with its own
query (skipping chunks its prompt already holds), and each prompt is priced on
its own: compressing 300 tokens of notes for a 4-token critique and 3,000
tokens of retrieved context for an answer are different bets. The cost model
(measured once per backend, cached under ``$VIVACE_HOME``) prices the
compression against the prefill it saves on the backend that serves the call.
Every decision, taken or not, lands in that call's trace under ``context``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vivace.compression.base import estimate_tokens
from vivace.compression.budget import PromptCompressor, backend_counter
from vivace.compression.cost import CostModel, Decision, get_cost_model
from vivace.config import Config
from vivace.errors import InputError, missing_extra
from vivace.retrieval.rag import MIN_COMPRESS_TOKENS, format_context, load_prompt
from vivace.runtime.backend import Backend, Message
from vivace.runtime.call import Call, Scope

if TYPE_CHECKING:  # Chroma and the embedder load when a call first needs them (a slim install has neither)
    from vivace.retrieval.store import Chunk, Store

log = logging.getLogger(__name__)


class RetrievalCompression:
    """``prepare(call, scope, backend)``: the call to send and the record of what was decided.

    The store, the compressor and the cost model are built on first need and
    kept for the runtime's life: a run with no collection and short prompts
    never loads an embedder.
    """

    def __init__(self, config: Config, store: Store | None = None, compressor: PromptCompressor | None = None,
                 cost_model: CostModel | None = None) -> None:
        self.config = config
        self._store = store
        self._compressor = compressor
        self._cost_model = cost_model
        self._retrieve_lock: asyncio.Lock | None = None

    # -- parts, built on first need -------------------------------------------------------------
    def store(self) -> Store:
        if self._store is None:
            from vivace.retrieval.store import Store

            self._store = Store(self.config)
        return self._store

    def compressor(self, backend: Backend) -> PromptCompressor:
        if self._compressor is None:
            from vivace.retrieval.embedder import VivaceEmbedder

            embedder = VivaceEmbedder(self.config.embedder) if self.config.embedder else VivaceEmbedder()
            self._compressor = PromptCompressor(backend_counter(backend), embedder, home=self.config.home)
        return self._compressor

    async def cost_model(self, backend: Backend) -> CostModel:
        if self._cost_model is None:
            self._cost_model = await get_cost_model(backend, self.config.home, self.compressor(backend))
        return self._cost_model

    # -- the decision ---------------------------------------------------------------------------
    async def prepare(self, call: Call, scope: Scope, backend: Backend) -> tuple[Call, dict[str, Any]]:
        """The call to send and its decision record (the same keys whatever was decided)."""
        record: dict[str, Any] = {"retrieved": 0, "compressed": False}
        context = ""
        if scope.collection and call.retrieve:
            chunks, record["retrieval"] = await self._retrieve(call, scope)
            record["retrieved"] = len(chunks)
            context = format_context(chunks) if chunks else ""
        held = call.text()
        history = [s for s in dict.fromkeys(call.compressible) if s.strip() and s in held]
        if not context and not history:
            record.update(compression="skipped", tokens_before=0, tokens_after=0)
            record["reason"] = "nothing to compress: " + (
                "no collection for this run" if not scope.collection else
                "retrieval not wanted by this call" if not call.retrieve else "nothing new retrieved") + ", no history"
            return call, record
        full = replace(call, messages=_with_context(call.messages, context))
        new_history, new_context, info = await self._compress(full, scope, backend, history, context)
        record.update(info)
        sent = replace(call, messages=_with_context(_replace_texts(call.messages, dict(zip(history, new_history))), new_context))
        record["prompt_tokens_before"] = before = await backend.count_tokens(full.messages, full.prefill)
        record["prompt_tokens_after"] = await backend.count_tokens(sent.messages, sent.prefill) if info["compressed"] else before
        return sent, record

    async def _retrieve(self, call: Call, scope: Scope) -> tuple[list[Chunk], dict[str, Any]]:
        """Top-k for this call's own query; chunks the prompt already holds are not sent twice.

        Chunks go in the order the run first met them, so calls whose top-k overlap (a SoT
        skeleton and its points, sibling researchers) start with the same text and share the
        engine's prefix cache as far as their chunks agree.
        """
        collection = scope.collection or ""
        t0 = time.perf_counter()
        query = (call.query or call.last_user()).strip()[:2000]
        k = self.config.retrieval_k
        if self._retrieve_lock is None:
            self._retrieve_lock = asyncio.Lock()
        async with self._retrieve_lock:  # one embedder, many concurrent branches: embed one query at a time
            chunks = await asyncio.to_thread(self.store().retrieve, query, k, collection)
        held = call.text()
        fresh = [c for c in chunks if c.text.strip() not in held]
        seen: dict[str, int] = scope.memo.setdefault("chunk_order", {})
        for c in fresh:
            seen.setdefault(c.id, len(seen))
        fresh.sort(key=lambda c: seen[c.id])
        info = {
            "collection": collection,
            "k": k,
            "query": query[:200],
            "chunks": [{"id": c.id, "source": c.source, "score": round(c.score, 4)} for c in fresh],
            "already_in_prompt": len(chunks) - len(fresh),
            "seconds": round(time.perf_counter() - t0, 6),
        }
        return fresh, info

    async def _compress(
        self, call: Call, scope: Scope, backend: Backend, history: list[str], context: str
    ) -> tuple[list[str], str, dict[str, Any]]:
        """Price compressing the history and the retrieved context for this call; apply it if it pays."""
        mode = scope.compression
        parts = [*history, context] if context else list(history)
        try:
            comp = self.compressor(backend)
        except ImportError as exc:  # a slim install (no Chroma, no MiniLM): nothing can be compressed
            hint = f"the compressor's embedder cannot load: {missing_extra(exc) or exc}"
            if mode == "always":
                raise InputError(f"compression 'always' cannot run: {hint}") from None
            n = sum(estimate_tokens(p) for p in parts)
            return history, context, {"compressed": False, "tokens_before": n, "tokens_after": n, "tokens_exact": False,
                                      "compression": "skipped", "reason": hint}
        sizes = [comp.count(p) for p in parts]
        n = sum(sizes)
        info: dict[str, Any] = {"compressed": False, "tokens_before": n, "tokens_after": n,
                                "tokens_exact": bool(getattr(comp.count, "exact", True))}
        over_budget = bool(history) and sum(sizes[: len(history)]) > scope.history_budget_tokens
        target = math.ceil(n / max(self.config.compression_ratio, 1.0))
        if over_budget:
            target = min(target, scope.history_budget_tokens + (sizes[-1] if context else 0))
        why = self._skip_reason(mode, n, over_budget, bool(context), scope)
        if why:
            info.update(compression="skipped", reason=why)
            return history, context, info
        decision = (await self.cost_model(backend)).decide(n, target, mode, self.config.compression_margin_s, ("coarse",))
        if not decision.compress and mode == "auto" and await self._overflows(call, backend):
            decision = replace(decision, compress=True, method="coarse",
                               reason=f"the prompt does not fit the context otherwise ({decision.reason})")
        info.update(decision=decision.to_dict(), reason=decision.reason,
                    predicted_saving_s=round(decision.predicted_saving_s, 6),
                    predicted_cost_s=round(decision.predicted_cost_s, 6))
        if not decision.compress:
            info["compression"] = "skipped"
            return history, context, info
        t0 = time.perf_counter()
        query = (call.query or call.last_user())[:2000]
        ratio = n / max(target, 1)
        out = await asyncio.to_thread(_compress_parts, comp, parts, sizes, query, ratio)
        after = sum(comp.count(p) for p in out)
        info.update(compression=decision.method, compressed=True, tokens_after=after,
                    actual_s=round(time.perf_counter() - t0, 6))
        return out[: len(history)], (out[-1] if context else ""), info

    @staticmethod
    def _skip_reason(mode: str, n: int, over_budget: bool, has_context: bool, scope: Scope) -> str:
        if mode == "off":
            return "compression is off"
        if n < MIN_COMPRESS_TOKENS and mode != "always":
            return f"{n} tokens of context and history, under {MIN_COMPRESS_TOKENS}: nothing measurable to save"
        if mode == "auto" and not has_context and not over_budget:
            return f"history within its {scope.history_budget_tokens}-token budget"
        return ""

    @staticmethod
    async def _overflows(call: Call, backend: Backend) -> bool:
        """Whether the prompt as it stands, plus its output budget, would not fit the model's context."""
        tokens = await backend.count_tokens(call.messages, call.prefill)
        return tokens + (call.max_tokens or 0) > backend.context_length


def _compress_parts(comp: PromptCompressor, parts: list[str], sizes: list[int], query: str, ratio: float) -> list[str]:
    """Each part to its share of the target, so no part is squeezed to make room for another."""
    out = []
    for text, size in zip(parts, sizes):
        budget = max(1, math.ceil(size / ratio))
        out.append(comp.compress(text, query, budget, "auto")[0] if size > budget else text)
    return out


def _replace_texts(messages: list[Message], swaps: dict[str, str]) -> list[Message]:
    """Compressed history in place of the original; a system prompt is never rewritten (the safety guard's rule)."""
    if not swaps:
        return messages
    out = []
    for m in messages:
        if m["role"] == "system":
            out.append(m)
            continue
        content = m["content"]
        for old, new in swaps.items():
            content = content.replace(old, new)
        out.append({**m, "content": content})
    return out


def _with_context(messages: list[Message], context: str) -> list[Message]:
    """The retrieved context goes first in the last user turn, the layout the RAG figures were measured with."""
    if not context:
        return messages
    out = [dict(m) for m in messages]
    i = max((j for j, m in enumerate(out) if m["role"] == "user"), default=len(out) - 1)
    block = load_prompt("context_block").format(context=context.strip()).strip()
    out[i]["content"] = f"{block}\n\n{out[i]['content']}"
    return out


__all__ = ["Decision", "RetrievalCompression"]
