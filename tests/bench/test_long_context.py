"""The long-context row: tasks that fit the KV budget, distinct contexts, and the measured round."""

from __future__ import annotations

import pytest

from vivace_bench.long_context import _contexts, measure_agents, tasks_that_fit
from vivace_bench.scoring import bundled_text


def test_tasks_that_fit_is_the_budget_over_the_window():
    assert tasks_that_fit(46592, 4096) == 11 and tasks_that_fit(93184, 4096) == 22
    assert tasks_that_fit(None, 4096) is None and tasks_that_fit(1000, 4096) == 0


def test_contexts_are_distinct_and_of_the_asked_length(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tok.encode(bundled_text(), add_special_tokens=False)[:3000]
    texts = _contexts(ids, tok, 5, 4000)  # longer than the text: it wraps around
    assert len(set(t[:200] for t in texts)) == 5  # no two share a prefix the prefix cache could reuse
    for text in texts:
        assert abs(len(tok.encode(text, add_special_tokens=False)) - 4000) < 40


class _Budget:
    """The real engine, reporting a small KV budget so the round stays short."""

    def __init__(self, engine, tokens):
        self._engine, self.kv_capacity_tokens = engine, tokens
        self.name, self.model, self.tokenizer = engine.name, engine.model, engine.tokenizer

    def generate(self, request):
        return self._engine.generate(request)


@pytest.mark.engine
def test_the_round_runs_as_many_tasks_as_fit_on_the_real_engine(engine, run):
    ids = engine.tokenizer.encode(bundled_text(), add_special_tokens=False)[:4000]
    result = run(measure_agents(_Budget(engine, 3 * 700 + 100), ids, context=700, out_tokens=16))
    assert result["agents"] == 3 and result["agents_context"] == 700
    assert 500 < result["agents_prompt_tokens"] <= 700 - 16 and result["agents_tok_s"] > 0
