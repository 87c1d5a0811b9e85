"""The bundled evaluation data is what the benches claim it is."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from vivace_bench.scoring import bundled_mc_items, bundled_text


def test_mc_items_are_well_formed_and_balanced() -> None:
    items = bundled_mc_items()
    assert len(items) >= 120
    assert len({i["id"] for i in items}) == len(items)
    for item in items:
        assert item["question"].strip() and len(item["choices"]) == 4
        assert len({c.strip().lower() for c in item["choices"]}) == 4, item["id"]
        assert 0 <= item["answer"] < 4
    counts = Counter(i["answer"] for i in items)
    assert max(counts.values()) - min(counts.values()) <= 2, counts  # no position bias to exploit


def test_perplexity_text_has_at_least_20k_tokens(model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    assert len(tokenizer.encode(bundled_text(), add_special_tokens=False)) >= 20_000
