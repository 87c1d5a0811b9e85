"""Token counting for the budget, and compression with any embedder (no MiniLM, no scorer here)."""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

from vivace.compression import CoarseCompressor, Counting, PromptCompressor, backend_counter, estimate_tokens
from vivace.runtime.fake import FakeBackend
from vivace.runtime.limits import InFlightLimiter, LimitedBackend

SENTENCES = [
    "The ferry to Orlund leaves at dawn.",
    "Bakers on the island sell rye bread.",
    "Gulls follow the ferry across the strait.",
    "The lighthouse keeper counts the boats at night.",
    "Orlund has one school and two churches.",
]
TEXT = " ".join(SENTENCES)


class HashedWords:
    """A toy ``Embedder``: bag of words hashed into 64 dimensions, unit length."""

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, zlib.crc32(word.encode()) % 64] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def words(text: str) -> int:
    return len(text.split())


class Tokenizer:
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(range(len(text.split()) + (1 if add_special_tokens else 0)))


class EngineLike(FakeBackend):
    """An in-process backend: it has a tokenizer."""

    tokenizer = Tokenizer()


def test_backend_counter_uses_an_in_process_tokenizer_through_the_limiter() -> None:
    counter = backend_counter(LimitedBackend(EngineLike(), InFlightLimiter(1)))
    assert counter.exact and counter("one two three") == 3


def test_backend_counter_estimates_without_a_tokenizer() -> None:
    counter = backend_counter(FakeBackend())
    assert not counter.exact and counter.source == "estimate"
    assert counter("") == 0 and counter("abcd") == 1 and counter("abcde") == 2 == estimate_tokens("abcdefgh")


def test_stats_say_whether_tokens_were_estimated() -> None:
    exact = PromptCompressor(Counting(words, True, "words"), HashedWords())
    guessed = PromptCompressor(backend_counter(FakeBackend()), HashedWords())
    assert exact.compress(TEXT, "ferry", 1000)[1].counted == "exact"
    _, stats = guessed.compress(TEXT, "When does the ferry to Orlund leave?", 20, "coarse")
    assert stats.counted == "estimate" and stats.to_dict()["counted"] == "estimate"
    assert PromptCompressor(words, HashedWords()).counted == "exact"  # a plain function counts as exact


def test_coarse_takes_any_embedder() -> None:
    out, stats = CoarseCompressor(words, HashedWords()).compress(TEXT, "When does the ferry to Orlund leave?", 16)
    assert "The ferry to Orlund leaves at dawn." in out and stats.compressed_tokens <= 16
    kept = [s for s in SENTENCES if s in out]
    assert len(kept) > 1 and sorted(kept, key=out.index) == kept  # original order


def test_coarse_needs_an_embedder() -> None:
    with pytest.raises(TypeError, match="embedder"):
        CoarseCompressor(words, None)  # type: ignore[arg-type]
