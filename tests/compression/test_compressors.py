"""Coarse and fine compression with the real models: stats, budgets, protected spans."""

from __future__ import annotations

import pytest

from vivace.compression.base import protected_spans, strip_marks
from vivace.compression.budget import PromptCompressor

from .conftest import TEXT

QUERY = "When was the harbor of Saltmere rebuilt?"


def within(n: int, budget: int) -> bool:
    return abs(n - budget) <= 0.10 * budget


def test_strip_marks_and_protected_spans() -> None:
    clean, spans = strip_marks("keep <keep>this part</keep> and <keep>that</keep>.")
    assert clean == "keep this part and that." and [clean[a:b] for a, b in spans] == ["this part", "that"]
    text = "In 1887 the harbor master Ingrid Vasquell met The Board of Trade."
    found = [text[a:b] for a, b in protected_spans(text)]
    assert "1887" in found and "Ingrid Vasquell" in found and "In" not in found


@pytest.mark.parametrize("method", ["coarse", "fine", "coarse+fine"])
def test_stats_and_budget(compressor: PromptCompressor, method: str) -> None:
    original = compressor.count(TEXT)
    budget = original // (3 if method == "coarse+fine" else 2)  # 3x: both stages run
    out, stats = compressor.compress(TEXT, QUERY, budget, method)
    assert stats.original_tokens == original
    assert stats.compressed_tokens == compressor.count(out)
    assert stats.ratio == pytest.approx(original / stats.compressed_tokens, rel=1e-3)
    assert stats.method == method and stats.seconds > 0 and stats.budget_tokens == budget
    # Never more than 10% over; fine-grained methods also land within 10% under it,
    # coarse (whole sentences) within 20%.
    low = 0.8 if method == "coarse" else 0.9
    assert low * budget <= stats.compressed_tokens <= 1.1 * budget, (stats, out)
    assert "1887" in out  # the answer to the query survives every method


def test_fine_protects_digits_entities_and_marked_spans(compressor: PromptCompressor) -> None:
    marked = TEXT.replace("blue heron at dusk", "<keep>blue heron at dusk</keep>")
    budget = compressor.count(TEXT) * 45 // 100
    out, stats = compressor.fine.compress(marked, QUERY, budget=budget)
    for span in ("1887", "1962", "Ingrid Vasquell", "Saltmere", "blue heron at dusk"):
        assert span in out, span
    assert "<keep>" not in out and stats.protected_tokens > 0
    assert within(stats.compressed_tokens, budget)


def test_fine_ratio_and_word_units(compressor: PromptCompressor) -> None:
    out, stats = compressor.fine.compress(TEXT, QUERY, ratio=2.0)
    assert stats.ratio == pytest.approx(2.0, rel=0.1)
    source_words = set(TEXT.replace("\n", " ").split())
    # Whole words are dropped, never cut in half.
    assert all(w.strip(".,") in TEXT for w in out.split()), set(out.split()) - source_words


def test_coarse_keeps_marked_sentence_and_order(compressor: PromptCompressor) -> None:
    marked = TEXT.replace("Seagulls circle", "<keep>Seagulls circle</keep>")
    out, stats = compressor.coarse.compress(marked, QUERY, compressor.count(TEXT) // 3)
    assert "Seagulls circle above the market stalls" in out and "rebuilt in 1887" in out
    assert out.index("rebuilt in 1887") < out.index("Seagulls")
    assert stats.method == "coarse" and stats.compressed_tokens <= stats.budget_tokens


def test_within_budget_is_untouched(compressor: PromptCompressor) -> None:
    out, stats = compressor.compress(TEXT, QUERY, 10_000)
    assert out == TEXT and stats.method == "none" and stats.ratio == 1.0
