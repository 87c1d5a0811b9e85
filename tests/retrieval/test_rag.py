"""prepare_context: retrieve -> cost-model decision -> messages, with the stats for the trace.

The FakeBackend stands in only for counting and orchestration here; the
retrieval (Chroma + MiniLM) and compression (MiniLM) are real.
"""

from __future__ import annotations

import asyncio

import pytest

from vivace.compression.budget import PromptCompressor
from vivace.compression.cost import CostModel
from vivace.config import Config
from vivace.errors import InputError
from vivace.retrieval import rag
from vivace.retrieval.embedder import VivaceEmbedder
from vivace.runtime.fake import FakeBackend

from .conftest import ingest_corpus


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def setup(rconfig: Config, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, str, list[dict[str, str]]]:
    name, questions = ingest_corpus(rconfig, tmp_path_factory, "rag", docs=5, seed=11)
    return rconfig, name, questions


def _run(coro):  # noqa: ANN001, ANN202
    return asyncio.run(coro)


@pytest.mark.parametrize(("prefill_tok_s", "compressed"), [(50.0, True), (1e7, False)])
def test_prepare_context_follows_the_cost_model(setup, prefill_tok_s: float, compressed: bool) -> None:  # noqa: ANN001
    config, name, questions = setup
    q = questions[0]
    backend = FakeBackend()
    model = CostModel.from_throughputs(prefill_tok_s=prefill_tok_s, coarse_tok_s=5000.0)
    messages, stats = _run(rag.prepare_context(q["question"], config, backend, name, k=3, cost_model=model,
                                                 compressor=PromptCompressor(words, VivaceEmbedder())))
    assert messages[0]["role"] == "system" and q["question"] in messages[-1]["content"]
    assert q["answer"] in messages[-1]["content"]  # the planted fact made it into the prompt
    assert len(stats["chunks"]) == 3 and stats["chunks"][0]["source"].endswith(q["source"])
    comp = stats["compression"]
    assert comp["compress"] is compressed and comp["mode"] == "auto"
    assert comp["predicted_saving_s"] >= 0 and comp["predicted_cost_s"] > 0
    if compressed:
        assert comp["method"] == "coarse" and comp["actual_s"] > 0
        assert comp["compressed_tokens"] < comp["original_tokens"] and comp["ratio"] > 1.5
    else:
        assert comp["method"] == "none" and comp["compressed_tokens"] == comp["original_tokens"]
    assert stats["retrieval_s"] > 0 and stats["overhead_s"] >= stats["retrieval_s"]


def test_prepare_context_off_and_errors(setup) -> None:  # noqa: ANN001
    config, name, questions = setup
    backend = FakeBackend()
    off = config.replace(compression="off")
    _, stats = _run(rag.prepare_context(questions[1]["question"], off, backend, name, k=2))
    assert stats["compression"]["compress"] is False and "off" in stats["compression"]["reason"]
    msgs, stats = _run(rag.prepare_context("plain?", config, backend, None))
    assert msgs == [{"role": "user", "content": "plain?"}] and stats == {}
    with pytest.raises(InputError, match="not found"):
        _run(rag.prepare_context("q", config, backend, "missing-collection"))


def test_prompt_is_package_data() -> None:
    assert "{context}" in rag.load_prompt("rag") and "{question}" in rag.load_prompt("rag")
    msgs = rag.build_messages("Why?", "Because.")
    assert "Because." in msgs[1]["content"] and "Why?" in msgs[1]["content"]
