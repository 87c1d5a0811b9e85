"""The cost model: decisions, fitting, the cache, and a real measurement on the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from vivace.compression.cost import (
    CostModel, backend_key, fit_quadratic, get_cost_model, load_cached, save_cached,
)
from vivace.runtime.backend import GenerationResult


def test_decision_flips_between_slow_and_fast_prefill() -> None:
    coarse_tok_s = 2500.0  # MiniLM sentence selection, about what it does here
    slow = CostModel.from_throughputs(prefill_tok_s=300.0, coarse_tok_s=coarse_tok_s, key="slow")
    fast = CostModel.from_throughputs(prefill_tok_s=20000.0, coarse_tok_s=coarse_tok_s, key="fast")
    a, b = slow.decide(6000, 3000, "auto", 0.05), fast.decide(6000, 3000, "auto", 0.05)
    assert a.compress and a.method == "coarse" and a.predicted_saving_s == pytest.approx(10.0)
    assert a.predicted_cost_s == pytest.approx(2.4)
    assert not b.compress and b.method == "none" and b.predicted_saving_s < b.predicted_cost_s
    assert fast.decide(6000, 3000, "always").compress
    assert not slow.decide(6000, 3000, "off").compress
    assert not slow.decide(100, 200, "auto").compress


def test_margin_and_plan_choice() -> None:
    model = CostModel.from_throughputs(prefill_tok_s=1000.0, coarse_tok_s=4000.0, fine_tok_s=600.0)
    assert model.decide(1000, 500, "auto", 0.0).method == "coarse"  # saves 0.5 s, costs 0.25 s
    assert not model.decide(1000, 500, "auto", 0.3).compress  # the margin tips it
    fine_only = model.decide(1000, 500, "auto", 0.0, plans=("fine",))
    assert not fine_only.compress  # 1.67 s of scoring to save 0.5 s of prefill
    assert model.decide(1000, 500, "auto", plans=("nonexistent",)).reason == "no measured compressor"


def test_fit_quadratic_recovers_nonnegative_coefficients() -> None:
    pts = [(n, 0.01 + 0.002 * n + 1e-7 * n * n) for n in (32.0, 1000.0, 3000.0, 6000.0)]
    a, b, c = fit_quadratic(pts)
    assert a == pytest.approx(0.01, abs=1e-6) and b == pytest.approx(0.002, rel=1e-4) and c == pytest.approx(1e-7, rel=1e-3)
    assert min(fit_quadratic([(10.0, 1.0), (20.0, 0.5), (30.0, 0.2)])) >= 0


def test_cache_round_trip(tmp_path: Path) -> None:
    model = CostModel.from_throughputs(500.0, 2000.0, None, key="vllm:m:8192")
    save_cached(tmp_path, model)
    save_cached(tmp_path, CostModel.from_throughputs(9.0, key="other"))
    loaded = load_cached(tmp_path, "vllm:m:8192")
    assert loaded is not None and loaded.prefill == model.prefill and loaded.coarse == model.coarse and loaded.fine is None
    assert load_cached(tmp_path, "missing") is None


class _Recording:
    """The real engine, passed through; keeps each request and the engine's result for it."""

    def __init__(self, engine: Any) -> None:
        self.inner = engine
        self.name, self.model = engine.name, engine.model
        self.seen: list[tuple[Any, Any]] = []

    @property
    def context_length(self) -> int:
        return self.inner.context_length

    async def count_tokens(self, messages: Any, prefill: Any = None) -> int:
        return await self.inner.count_tokens(messages, prefill)

    async def generate(self, request: Any) -> Any:
        async for event in self.inner.generate(request):
            if isinstance(event, GenerationResult):
                self.seen.append((request, event))
            yield event

    async def aclose(self) -> None:
        pass


@pytest.mark.engine
def test_cost_model_measured_on_the_real_engine(engine: Any, run: Callable[..., Any], compressor: Any, tmp_path: Path) -> None:
    """One real measurement (prefill on the engine, the coarse stage on MiniLM) drives ``decide``."""
    rec = _Recording(engine)
    model = run(get_cost_model(rec, tmp_path, compressor))
    assert model.key == backend_key(engine) and load_cached(tmp_path, model.key) is not None
    points = [tuple(p) for p in model.samples["prefill"]]
    # The points are the engine's own figures for the three 1-token prefill calls, at increasing lengths.
    measured = [(req, res) for req, res in rec.seen if res.tag == "cost:prefill"]
    assert len(measured) == len(points) == 3
    for (req, res), (n, t) in zip(measured, points):
        assert res.backend == "vllm" and res.output_tokens == 1
        assert res.prompt_tokens == run(engine.count_tokens(req.messages))
        assert n == res.prompt_tokens - (res.cached_tokens or 0) and t == res.ttft_s and t > 0
    ns = [n for n, _ in points]
    assert ns[0] < ns[1] < ns[2] and ns[2] > 2000  # asked for 32, 1024 and 3072 words
    # The fit: non-negative, and it reproduces every measured point to within 25% of the
    # largest measured TTFT (three timings on a shared CPU; a wrong fit misses by far more).
    a, b, c = model.prefill
    assert min(a, b, c) >= 0 and b + c > 0
    tmax = max(t for _, t in points)
    for n, t in points:
        assert abs(model.prefill_s(int(n)) - t) <= 0.25 * tmax, (model.prefill, points)
    assert model.prefill_s(int(ns[2])) > model.prefill_s(int(ns[0]))
    # The coarse stage was timed on the real MiniLM compressor: positive seconds per token.
    assert model.coarse is not None and model.coarse[1] > 0 and model.coarse[0] >= 0
    # decide() uses this measured model: the saving is prefill_s(original) - prefill_s(target) from it.
    original, target = int(ns[2]), int(ns[2]) // 4
    d = model.decide(original, target, "auto", 0.05)
    expected_saving = model.prefill_s(original) - model.prefill_s(target)
    assert d.predicted_saving_s == pytest.approx(expected_saving) and expected_saving > 0
    assert d.predicted_cost_s == pytest.approx(model.stage_s("coarse", original))
    assert d.compress == (expected_saving > d.predicted_cost_s + 0.05)
