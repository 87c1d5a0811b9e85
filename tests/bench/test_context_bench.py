"""The context benchmark's pieces, and one tiny end-to-end run on the real engine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from vivace.compression.cost import CostModel, backend_key, save_cached
from vivace.config import Config
from vivace.errors import InputError
from vivace_bench import context_bench
from vivace_bench.synthetic import make_corpus, write_corpus


def test_synthetic_corpus_is_long_and_unambiguous(model_dir: Path) -> None:
    from transformers import AutoTokenizer

    files, questions = make_corpus()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    assert sum(len(tok.encode(t)) for t in files.values()) >= 6000
    corpus = "\n".join(files.values())
    for q in questions:
        assert corpus.count(q["answer"]) == 1 and q["answer"] in files[q["source"]]
        assert q["answer"] not in q["question"]
    assert make_corpus() == (files, questions)  # deterministic


def test_questions_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        context_bench.load_questions(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(InputError, match="answer"):
        context_bench.load_questions(bad)
    bad.write_text("\n")
    with pytest.raises(InputError, match="no questions"):
        context_bench.load_questions(bad)


def test_fit_corpus_truncates_at_sentences() -> None:
    docs = ["One two three. Four five six.", "Seven eight nine. Ten eleven twelve."]
    count = lambda t: len(t.split())  # noqa: E731
    assert context_bench._fit_corpus(docs, count, 100) == ("\n\n".join(docs), False)
    text, cut = context_bench._fit_corpus(docs, count, 9)
    assert cut and text == "One two three. Four five six.\n\nSeven eight nine."


@pytest.mark.engine
def test_tiny_run_writes_the_report(engine: Any, run: Callable[..., Any], tmp_path: Path) -> None:
    corpus, questions = write_corpus(tmp_path / "data", docs=3, seed=5)
    config = Config(home=tmp_path / "home", chroma_path=tmp_path / "chroma")
    # A given cost model (slow prefill) keeps the test from timing the engine at 3k tokens.
    save_cached(config.home, CostModel(backend_key(engine), (0.0, 0.01, 0.0), (0.0, 1e-4)))
    args = argparse.Namespace(
        corpus=str(corpus), questions=str(questions), out=str(tmp_path / "out"), limit=1,
        answer_tokens=8, k=2, compression="auto", no_probe=True, json=True,
    )
    report = run(context_bench.run_bench(config, args, backend=engine))
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["n"] == report["n"] == 1 and set(saved["methods"]) == set(context_bench.METHODS)
    keys = {"prompt_tokens_mean", "ttft_median_s", "latency_median_s", "accuracy", "overhead_median_s", "gold_kept_rate"}
    for name, m in saved["methods"].items():
        assert keys <= set(m) and m["n"] == 1, name
        assert m["cached_tokens_mean"] < 16  # the nonce defeats the prefix cache across calls
    assert saved["methods"]["rag"]["prompt_tokens_mean"] < saved["methods"]["stuff"]["prompt_tokens_mean"]
    assert saved["methods"]["stuff_compress"]["compressed_calls"] == 1  # slow prefill: compression pays
    assert saved["methods"]["stuff"]["gold_kept_rate"] == 1.0
