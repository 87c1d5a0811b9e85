"""The cost model: decisions, fitting, the cache, and a real measurement on the engine."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

import pytest

from vivace.compression.cost import CostModel, fit_quadratic, load_cached, measure_prefill, save_cached


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


@pytest.mark.engine
def test_measure_prefill_on_the_real_engine(engine: Any, run: Callable[..., Any]) -> None:
    points = run(measure_prefill(engine, lengths=(16, 600)))
    (n1, t1), (n2, t2) = points
    assert n1 < 60 < 400 < n2 and 0 < t1 < t2
