"""`vivace bench quant`: engine scoring against torch, checkpoints, and rows that cannot run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from vivace_bench.quant_configs import CONFIGS, build_w8a8, by_name, unsupported_reason
from vivace_bench.scoring import engine_perplexity, mc_accuracy, windows

TEXT = (
    "The river ran slowly past the old mill, where the miller's children played among the sacks of flour. "
    "In the evening the lamps were lit along the bank, and the boatmen sang as they tied up for the night. "
    "Nobody in the village could remember a summer so dry; the wells were low and the fields had turned brown. "
) * 6


@pytest.mark.engine
def test_engine_perplexity_matches_torch(engine, run, model_dir):
    ids = engine.tokenizer.encode(TEXT, add_special_tokens=False)
    assert len(ids) > 300
    result = run(engine_perplexity(engine, ids, window=256))
    assert result.tokens_scored == sum(len(p) - 1 for p in windows(ids, 256))
    from vivace_bench.quant_torch import load_model, torch_perplexity

    reference = torch_perplexity(load_model(model_dir), ids, 256)  # a plain transformers forward in float32
    assert abs(result.perplexity / reference - 1) < 0.01, (result.perplexity, reference)


def _torch_choice_scores(model, tokenizer, item):
    """Each choice's summed and per-token log-likelihood after the question, by a plain float32 torch forward."""
    import torch

    from vivace_bench.scoring import mc_prompt

    context = tokenizer.encode(mc_prompt(item["question"]), add_special_tokens=False)
    sums, norms = [], []
    with torch.inference_mode():
        for choice in item["choices"]:
            ids = tokenizer.encode(" " + choice.strip(), add_special_tokens=False)
            full = torch.tensor([context + ids])
            logp = torch.log_softmax(model(full).logits[0, :-1].float(), dim=-1)
            tail = logp.gather(1, full[0, 1:].unsqueeze(1))[-len(ids):]
            sums.append(float(tail.sum()))
            norms.append(float(tail.sum()) / len(ids))
    return sums, norms


def _gap(scores, i):
    """How far choice ``i`` is from the nearest other choice (positive: clearly apart)."""
    return min(abs(scores[i] - s) for j, s in enumerate(scores) if j != i)


@pytest.mark.engine
def test_mc_accuracy_picks_the_highest_log_likelihood(engine, run, model_dir):
    """The labels are set from hand-computed (torch) log-likelihoods: items 1 and 3 labelled with the
    most likely choice, item 2 with the least likely, so a correct scorer gives exactly 2/3."""
    from vivace_bench.quant_torch import load_model

    items = [
        {"question": "What colour is fresh snow?", "choices": ["white", "green", "purple", "orange"]},
        {"question": "How many days are in a week?", "choices": ["three", "ten", "seven", "one hundred"]},
        {"question": "Which animal says 'moo'?", "choices": ["a cat", "a cow", "a fish", "a snake"]},
    ]
    model = load_model(model_dir)
    expected_norm = 0
    for k, item in enumerate(items):
        sums, norms = _torch_choice_scores(model, engine.tokenizer, item)
        best, worst = max(range(4), key=sums.__getitem__), min(range(4), key=sums.__getitem__)
        item["answer"] = worst if k == 1 else best
        # Clear margins, so the engine's kernels (fp32 or bf16) can't flip the pick.
        assert _gap(sums, item["answer"]) > 0.3, (item, sums)
        best_norm = max(range(4), key=norms.__getitem__)
        assert _gap(norms, best_norm) > 0.15, (item, norms)
        expected_norm += best_norm == item["answer"]
    result = run(mc_accuracy(engine, items))
    assert result["items"] == 3 and result["chance"] == pytest.approx(0.25)
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["accuracy_norm"] == pytest.approx(expected_norm / 3)


def test_w8a8_checkpoint_is_round_to_nearest_and_reused(model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    target = build_w8a8(model_dir, tmp_path / "w8a8")
    config = json.loads((target / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    original = load_file(str(model_dir / "model.safetensors"))
    quantized = load_file(str(target / "model.safetensors"))
    key = "model.layers.0.mlp.down_proj.weight"
    q, scale = quantized[key], quantized[key.replace("weight", "weight_scale")]
    assert q.dtype == torch.int8 and scale.shape == (q.shape[0], 1)
    error = (q.float() * scale - original[key].float()).abs()
    assert bool((error <= scale / 2 + 1e-6).all())  # RTN: at most half a step per element
    assert quantized["model.embed_tokens.weight"].dtype == original["model.embed_tokens.weight"].dtype
    before = (target / "model.safetensors").stat().st_mtime_ns
    build_w8a8(model_dir, tmp_path / "w8a8")
    assert (target / "model.safetensors").stat().st_mtime_ns == before


def test_configs_are_consistent_and_by_name_always_includes_the_baseline():
    from vivace.errors import InputError
    from vivace_bench.quant_configs import BASELINE

    names = [c.name for c in CONFIGS]
    assert len(set(names)) == len(names) and BASELINE in names
    base = next(c for c in CONFIGS if c.name == BASELINE)
    assert base.quantization is None and base.kv_cache_dtype == "auto" and base.checkpoint is None
    for c in CONFIGS:
        # What the report says about the KV cache is what the engine is asked for.
        assert c.kv == c.kv_cache_dtype if c.kv_cache_dtype != "auto" else not c.kv.startswith("fp8")
        assert ("kv-fp8" in c.name) == c.kv_cache_dtype.startswith("fp8")
        chosen = by_name([c.name])
        assert chosen[0].name == BASELINE and chosen[-1] is c and len(chosen) == (1 if c.name == BASELINE else 2)
    assert by_name(None) == list(CONFIGS)
    with pytest.raises(InputError, match="unknown quant config"):
        by_name(["no-such-config"])


def test_unsupported_reasons_are_specific(model_dir):
    known = {c.name: c for c in CONFIGS}
    reason = unsupported_reason(known["awq"], model_dir, {})
    assert "no checkpoint given" in reason or "int4" in reason
    # vLLM's int8 weight-only shorthand only touches MoE experts: on this dense model it would be a no-op.
    assert "MoE" in unsupported_reason(known["w8-weight-only"], model_dir, {})
    assert unsupported_reason(known["bf16"], model_dir, {}) is None
    # vLLM refuses e5m2 with a checkpoint's calibrated KV scales ("not supported with fp8 checkpoints").
    assert "fp8_e4m3 only" in unsupported_reason(known["kv-fp8-e5m2-cal"], model_dir, {})


def test_e5m2_with_a_calibrated_checkpoint_is_refused_before_the_engine_starts(tmp_path):
    import json

    from vivace.errors import ConfigError
    from vivace.runtime.vllm_options import EngineOptions, check_supported

    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"kv_cache_scheme": {"num_bits": 8}}}))
    with pytest.raises(ConfigError, match="fp8_e4m3 only"):
        check_supported(EngineOptions(model=str(tmp_path), kv_cache_dtype="fp8_e5m2"))


def test_a_failing_config_becomes_a_row_and_the_rest_still_run(model_dir, tmp_path, monkeypatch, run):
    import argparse

    from vivace_bench import quant_bench

    calls = []

    async def fake_measure(config, path, token_ids, items, args, say):
        calls.append(config.name)
        if config.name == "fp32":
            raise RuntimeError("engine died\nsecond line")
        return {"status": "ok", "perplexity": 10.0, "kv_capacity_tokens": 1000}

    monkeypatch.setattr(quant_bench, "measure_config", fake_measure)
    rows = run(quant_bench.run_engine_configs(by_name(["fp32", "w8a8-int8"]), model_dir, {}, [1, 2], [], argparse.Namespace(), tmp_path, lambda s: None))
    assert calls == ["bf16", "fp32", "w8a8-int8"]
    status = {r["name"]: (r["status"], r["reason"]) for r in rows}
    assert status["fp32"] == ("failed", "engine died")
    assert status["bf16"][0] == status["w8a8-int8"][0] == "ok"


def _vivace(*args: str, env_home: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    from tests.test_cli import VIVACE, cli_env

    return subprocess.run([VIVACE, *args], capture_output=True, text=True, env=cli_env(env_home), timeout=timeout)


def test_bad_config_name_is_one_line(tmp_path, vivace_home):
    proc = _vivace("bench", "quant", "--configs", "nope", "--out", str(tmp_path), env_home=vivace_home)
    assert proc.returncode == 2
    assert "unknown quant config" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.engine
def test_cli_writes_rows_for_runnable_and_unsupported_configs(tmp_path, vivace_home, model_dir):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    out = tmp_path / "quant"
    proc = _vivace(
        "bench", "quant", "--configs", "fp32", "w8a8-int8", "kv-fp8-e4m3", "fp8", "gptq", "--checkpoint", f"gptq={empty}",
        "--ppl-tokens", "300", "--window", "150", "--mc-items", "4", "--tokens", "8", "--repeats", "1",
        "--no-fake-quant", "--out", str(out), env_home=vivace_home,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in report["configs"]}
    assert list(rows) == ["bf16", "fp32", "w8a8-int8", "kv-fp8-e4m3", "fp8", "gptq"]
    base, fp32 = rows["bf16"], rows["fp32"]
    for row in (base, fp32):
        assert row["status"] == "ok"
        assert 1 < row["perplexity"] < 1000 and row["decode_tok_s"] > 0 and row["batch16_tok_s"] > 0
        assert row["load_s"] > 0 and row["tokens_scored"] == 298
    assert base["ppl_delta_pct"] == 0.0 and base["kv_capacity_vs_baseline"] == 1.0
    # Same KV budget, twice the bytes per element: half the tokens.
    assert fp32["kv_capacity_vs_baseline"] == pytest.approx(0.5, rel=0.05)
    assert abs(fp32["ppl_delta_pct"]) < 2
    assert rows["gptq"]["status"] in ("failed", "unsupported") and rows["gptq"]["reason"]
    # The W8A8 checkpoint vivace writes loads into the engine and scores like the model it came from.
    w8a8 = rows["w8a8-int8"]
    assert w8a8["status"] == "ok", w8a8
    assert abs(w8a8["ppl_delta_pct"]) < 15 and w8a8["tokens_scored"] == 298 and w8a8["decode_tok_s"] > 0
    from vllm.platforms import current_platform

    from vivace.runtime.vllm_options import cpu_supports_fp8_kv

    fp8_kv = rows["kv-fp8-e4m3"]
    if current_platform.is_cpu() and not cpu_supports_fp8_kv():
        assert fp8_kv["status"] == "unsupported" and "AVX-512 or AMX" in fp8_kv["reason"]
    else:  # it must run where it can: one byte per element, twice the tokens in the same KV budget
        assert fp8_kv["status"] == "ok", fp8_kv
        assert fp8_kv["kv_capacity_vs_baseline"] == pytest.approx(2.0, rel=0.05)
        assert abs(fp8_kv["ppl_delta_pct"]) < 25 and fp8_kv["tokens_scored"] == 298
    if current_platform.is_cpu():
        assert rows["fp8"]["status"] == "unsupported" and "GPU" in rows["fp8"]["reason"]
    assert (out / "quant.png").exists()
