"""Coarse compression: keep the sentences most similar to the query, in their original order.

This is the coarse, question-aware stage of LongLLMLingua (Jiang et al.,
2023, "LongLLMLingua: Accelerating and Enhancing LLMs in Long Context
Scenarios via Prompt Compression", arXiv:2310.06839), with the ranking signal
swapped: LongLLMLingua ranks documents by the question's perplexity under a
small causal LM; we rank sentences by MiniLM cosine similarity, which is
about 6x cheaper per token than the 135M scorer here and is already loaded
for retrieval. Sentences holding caller-marked spans are always kept. The
embedder is passed in (retrieval's ``VivaceEmbedder``, say): compression sits
below retrieval and never builds one itself.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from vivace.compression.base import CompressionStats, Embedder, TokenCounter, overlaps, protected_spans, strip_marks
from vivace.compression.sentences import Span, split_sentences

log = logging.getLogger(__name__)


class CoarseCompressor:
    """Sentence selection by embedding similarity under a token budget."""

    method = "coarse"

    def __init__(self, counter: TokenCounter, embedder: Embedder) -> None:
        if embedder is None:
            raise TypeError("CoarseCompressor needs an embedder (retrieval's VivaceEmbedder, for one)")
        self.count = counter
        self.embedder = embedder

    def compress(
        self, text: str, query: str, budget: int, protect: tuple[str, ...] | list[str] = ()
    ) -> tuple[str, CompressionStats]:
        t0 = time.perf_counter()
        text, marked = strip_marks(text)
        original = self.count(text)
        if original <= budget:
            return text, CompressionStats.make(original, original, time.perf_counter() - t0, "none", budget_tokens=budget)
        sentences = split_sentences(text)
        keep_spans = sorted(marked + protected_spans(text, protect, digits=False, entities=False))
        forced = [overlaps(keep_spans, s.start, s.start + len(s.text)) for s in sentences]
        sizes = [self.count(s.text) for s in sentences]
        vectors = self.embedder.encode([query, *(s.text for s in sentences)])
        scores = vectors[1:] @ vectors[0]
        chosen = self._select(scores, sizes, forced, budget)
        out = self._join(text, sentences, chosen)
        # Joining can add a token or two per seam; trim the weakest until it fits.
        while (n := self.count(out)) > budget and len(chosen) > 1:
            weakest = min((i for i in chosen if not forced[i]), key=lambda i: scores[i], default=None)
            if weakest is None:
                break
            chosen.discard(weakest)
            out = self._join(text, sentences, chosen)
        seconds = time.perf_counter() - t0
        protected = sum(sizes[i] for i in chosen if forced[i])
        log.debug("coarse: %d -> %d tokens (budget %d) in %.3f s", original, n, budget, seconds)
        return out, CompressionStats.make(original, n, seconds, self.method, budget_tokens=budget, protected_tokens=protected)

    @staticmethod
    def _select(scores: np.ndarray, sizes: list[int], forced: list[bool], budget: int) -> set[int]:
        """Forced sentences first, then the best-scoring that still fit (a greedy knapsack)."""
        chosen = {i for i, f in enumerate(forced) if f}
        total = sum(sizes[i] + 1 for i in chosen)
        for i in np.argsort(-scores, kind="stable"):
            i = int(i)
            if i not in chosen and total + sizes[i] + 1 <= budget:
                chosen.add(i)
                total += sizes[i] + 1
        # Sentence granularity can leave a gap; one swap of a kept sentence for a longer,
        # still relevant one (above the median score) usually closes it.
        if budget - total > 0.1 * budget:
            median = float(np.median(scores))
            best = None
            for i in (i for i in chosen if not forced[i]):
                for j in range(len(sizes)):
                    if j in chosen or scores[j] < median:
                        continue
                    new_total = total - sizes[i] + sizes[j]
                    if total < new_total <= budget and (best is None or new_total > best[0]):
                        best = (new_total, i, j)
            if best:
                chosen.discard(best[1])
                chosen.add(best[2])
        return chosen

    @staticmethod
    def _join(text: str, sentences: list[Span], chosen: set[int]) -> str:
        """Kept sentences in order; a paragraph break where the original had one between them."""
        parts: list[str] = []
        last_end: int | None = None
        for i, s in enumerate(sentences):
            if i not in chosen:
                continue
            if last_end is not None:
                parts.append("\n\n" if "\n\n" in text[last_end : s.start] else ("\n" if "\n" in text[last_end : s.start] else " "))
            parts.append(s.text)
            last_end = s.start + len(s.text)
        return "".join(parts)
