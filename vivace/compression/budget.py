"""The budget controller: choose compression levels and ratios that hit a token budget.

Following LongLLMLingua's two-level scheme, a large reduction is split: the
coarse stage takes the text to at most twice the budget, the fine stage takes
it the rest of the way (fine pruning past ~2x garbles text). ``auto`` takes the
cheapest route that meets the budget: coarse alone, then fine only when coarse
could not get within 10% (one huge sentence, or everything marked).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from vivace.choices import CompressionMethod, values
from vivace.compression.base import CompressionStats, Counting, Embedder, TokenCounter, estimate_tokens, strip_marks
from vivace.compression.coarse import CoarseCompressor
from vivace.compression.fine import FineCompressor

log = logging.getLogger(__name__)

TOLERANCE = 0.10
FINE_MAX_RATIO = 2.0
METHODS = values(CompressionMethod)


def hf_counter(path: str | Path) -> Counting:
    """Exact counts with the Hugging Face tokenizer saved in ``path``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    return Counting(lambda text: len(tok.encode(text, add_special_tokens=False)), True, f"tokenizer {path}")


def backend_counter(backend: Any) -> Counting:
    """Count tokens as the target model does when its tokenizer is in process; else estimate.

    An in-process engine (vLLM) has its tokenizer at hand. For any other
    backend the old fallback, converting the embedded GGUF to use SmolLM2's
    tokenizer, was slow and still counted another model's tokens; a
    characters-per-token estimate, marked ``exact=False``, says what it is.
    """
    inner = getattr(backend, "inner", backend)
    tok = getattr(inner, "tokenizer", None)
    if tok is not None:
        return Counting(lambda text: len(tok.encode(text, add_special_tokens=False)), True, "backend tokenizer")
    return Counting(estimate_tokens, False, "estimate")


class PromptCompressor:
    """The DESIGN's Compressor: ``compress(text, query, budget) -> (text, stats)``."""

    def __init__(
        self,
        counter: TokenCounter,
        embedder: Embedder,
        fine_model: str | Path | None = None,
        home: Path | None = None,
    ) -> None:
        self.count = counter
        self.counted = "exact" if getattr(counter, "exact", True) else "estimate"
        self.coarse = CoarseCompressor(counter, embedder)
        self.fine = FineCompressor(fine_model, home=home, counter=counter)

    def compress(
        self,
        text: str,
        query: str,
        budget: int,
        method: str = "auto",
        protect: tuple[str, ...] | list[str] = (),
    ) -> tuple[str, CompressionStats]:
        """Compress to about ``budget`` tokens (never more than 10% over unless protected text alone is)."""
        if method not in METHODS:
            raise ValueError(f"unknown compression method {method!r}; one of {', '.join(METHODS)}")
        t0 = time.perf_counter()
        clean, _ = strip_marks(text)
        original = self.count(clean)
        if original <= budget:
            return clean, CompressionStats.make(
                original, original, time.perf_counter() - t0, "none", budget_tokens=budget, counted=self.counted
            )
        stages: list[CompressionStats] = []
        current = text
        if method in ("coarse", "auto"):
            current, st = self.coarse.compress(current, query, budget, protect)
            stages.append(st)
            if method == "auto" and st.compressed_tokens > budget * (1 + TOLERANCE):
                current, st = self.fine.compress(text, query, budget=budget, protect=protect)  # coarse failed: start over
                stages.append(st)
        elif method == "fine":
            current, st = self.fine.compress(current, query, budget=budget, protect=protect)
            stages.append(st)
        else:  # coarse+fine
            mid = min(original, math.ceil(budget * FINE_MAX_RATIO))
            if mid < original:
                current, st = self.coarse.compress(current, query, mid, protect)
                stages.append(st)
                current = self._remark(current, text)
            current, st = self.fine.compress(current, query, budget=budget, protect=protect)
            stages.append(st)
        done = self.count(current)
        used = "+".join(s.method for s in stages if s.method != "none") or "none"
        stats = CompressionStats.make(
            original, done, time.perf_counter() - t0, used, budget_tokens=budget, counted=self.counted,
            protected_tokens=max((s.protected_tokens for s in stages), default=0),
            stages=[s.to_dict() for s in stages],
        )
        log.debug("compressed %d -> %d tokens by %s", original, done, used)
        return current, stats

    @staticmethod
    def _remark(compressed: str, marked_original: str) -> str:
        """Put ``<keep>`` marks back around marked spans that survived the coarse stage."""
        from vivace.compression.base import _MARKED

        for m in _MARKED.finditer(marked_original):
            inner = m.group(1)
            if inner and inner in compressed:
                compressed = compressed.replace(inner, m.group(0), 1)
        return compressed


def compress_history(
    text: str, query: str, budget_tokens: int, compressor: PromptCompressor, method: str = "auto"
) -> tuple[str, dict[str, Any]]:
    """Fit a pipeline's history into its budget; unchanged (method "none") when it already fits.

    Histories must fit, so this runs whatever the cost model says; ``auto``
    uses the cheap coarse stage and falls back to fine pruning only if needed.
    The caller supplies the compressor (retrieval's ``compressor_for`` builds
    one per backend), so its counts are the backend's.
    """
    out, stats = compressor.compress(text, query, budget_tokens, method)
    return out, stats.to_dict()


async def acompress_history(
    text: str, query: str, budget_tokens: int, compressor: PromptCompressor, method: str = "auto"
) -> tuple[str, dict[str, Any]]:
    """``compress_history`` off the event loop (it is CPU-bound)."""
    import asyncio

    return await asyncio.to_thread(compress_history, text, query, budget_tokens, compressor, method)
