"""The per-machine quantization choice, its cache, and the 80-column console output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from vivace.runtime import quant_choice
from vivace.runtime.quant_choice import choose


def _row(name, ppl_delta, mc, batch16, status="ok"):
    return {"name": name, "status": status, "reason": None if status == "ok" else "needs a GPU", "ppl_delta_pct": ppl_delta,
            "perplexity": None if ppl_delta is None else 40 * (1 + ppl_delta / 100), "mc_accuracy": mc, "batch16_tok_s": batch16,
            "decode_tok_s": batch16 and batch16 / 10, "kv_capacity_tokens": 46592, "kv_capacity_vs_baseline": 1.0}


ROWS = [
    _row("bf16", 0.0, 0.720, 443.0),
    _row("fp32", -0.15, 0.720, 238.5),
    _row("kv-fp8-e4m3", 6.4, 0.728, 440.6),
    _row("kv-fp8-e4m3-cal", 0.7, 0.716, 450.0),
    _row("w8a8-int8", 2.8, 0.712, 541.9),
    _row("fp8", None, None, None, status="unsupported"),
]


def test_the_fastest_row_inside_the_bound_wins_and_every_rejection_says_why():
    result = choose(ROWS)
    assert result["choice"] == "kv-fp8-e4m3-cal"  # w8a8 is faster but 2.8% > 1%
    why = {v["name"]: v["why"] for v in result["candidates"]}
    assert "2.80% > 1%" in why["w8a8-int8"] and "6.40% > 1%" in why["kv-fp8-e4m3"]
    assert why["fp8"].startswith("unsupported")
    # A looser bound lets W8A8 in; a tighter MC bound throws out the calibrated row (0.4 points lost).
    assert choose(ROWS, max_ppl_pct=3.0)["choice"] == "w8a8-int8"
    assert choose(ROWS, max_mc_points=0.2)["choice"] == "bf16"
    assert "1.00x bf16" in choose(ROWS, max_ppl_pct=0.5)["reason"]


def test_no_baseline_no_choice():
    with pytest.raises(ValueError, match="bf16"):
        choose([r for r in ROWS if r["name"] != "bf16"])


def test_cache_is_per_cpu_and_model(tmp_path, monkeypatch):
    report = {"model": "smollm2-135m", "configs": ROWS, "created_at": "2026-11-30T05:00:00+0000"}
    path = quant_choice.save(tmp_path, report)
    assert path.parent == tmp_path / "tune" and quant_choice.load(tmp_path, "smollm2-135m")["rows"][0]["name"] == "bf16"
    assert quant_choice.load(tmp_path, "another-model") is None
    other = {**quant_choice.machine_key(), "flags": ["amx_tile"]}
    monkeypatch.setattr(quant_choice, "machine_key", lambda: other)
    assert quant_choice.load(tmp_path, "smollm2-135m") is None  # another CPU does not inherit this one's choice
    assert quant_choice.save(tmp_path, {"model": "m", "configs": ROWS[1:]}) is None  # no baseline: nothing kept


def test_console_tables_fit_80_columns_with_full_numbers():
    from rich.console import Console

    from vivace_bench.commands.bench_quant import print_tables

    rows = [dict(r) for r in ROWS]
    for r in rows:
        if r["status"] == "ok":
            r.update(perplexity=123.456, kv_capacity_tokens=193184, decode_tok_s=1234.5, batch16_tok_s=12345.6, kv_capacity_vs_baseline=2.0,
                     agents=22, agents_tok_s=9.25, agents_context=4096)
    rows[-1]["name"] = "w8a8-int8+kv-fp8-cal"
    report = {"model": "/x/SmolLM2-135M-Instruct", "kv_space_gib": 1.0, "configs": rows,
              "engine_vs_emulation": [{"config": "w8a8-int8+kv-fp8-cal", "engine_pct": 12.345, "emulated_pct": -1.5, "old_emulation_pct": None}],
              "fake_quant": [{"name": "W8A8+KV-fp8-e4m3-cal", "granularity": "W8A8, fp8 calibrated", "perplexity": 1234.567, "ppl_delta_pct": -10.5}]}
    console = Console(width=80, record=True, color_system=None)
    print_tables(report, console)
    text = console.export_text()
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert "…" not in text
    assert "long context, 4096-token tasks" in text  # the long-context table's title on one line
    for figure in ("123.456", "193184", "1234.5", "12345.6", "+12.35", "1234.567", "-10.50", "+6.40", "9.2"):
        assert figure in text, figure


def _vivace(*args: str, home: Path) -> subprocess.CompletedProcess:
    from tests.helpers import VIVACE, cli_env

    return subprocess.run([VIVACE, *args], capture_output=True, text=True, env=cli_env(home), timeout=300)


def test_explain_reads_this_machines_cached_run(tmp_path):
    proc = _vivace("bench", "quant", "--explain", home=tmp_path)
    assert proc.returncode == 1 and "run vivace bench quant first" in proc.stderr and "Traceback" not in proc.stderr
    quant_choice.save(tmp_path, {"model": "smollm2-135m", "configs": ROWS, "created_at": "now"})
    proc = _vivace("bench", "quant", "--explain", "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["choice"] == "kv-fp8-e4m3-cal"
    proc = _vivace("bench", "quant", "--explain", "--max-ppl-pct", "3", home=tmp_path)
    assert proc.returncode == 0 and "w8a8-int8: the fastest" in proc.stdout
    assert _vivace("bench", "quant", "--explain", "--max-ppl-pct", "-1", home=tmp_path).returncode == 2


def test_auto_without_a_measurement_is_one_config_error(tmp_path, model_dir):
    from vivace.errors import ConfigError

    with pytest.raises(ConfigError, match="run vivace bench quant once"):
        quant_choice.auto_engine("auto", "smollm2-135m", tmp_path)
    for bad in ("auto:x", "auto:1:2:3", "auto:-1"):
        with pytest.raises(ConfigError, match="MAX_PPL_PCT"):
            quant_choice.parse_auto(bad)
    assert quant_choice.parse_auto("auto:2.5") == (2.5, 1.0) and quant_choice.parse_auto("awq") is None
    rows = [dict(r, engine={"model": str(tmp_path / "deleted"), "dtype": "bfloat16", "quantization": None,
                            "kv_cache_dtype": "auto"}) for r in ROWS]
    quant_choice.save(tmp_path, {"model": "smollm2-135m", "configs": rows})
    with pytest.raises(ConfigError, match="engine folder is gone"):
        quant_choice.auto_engine("auto", "smollm2-135m", tmp_path)



def test_any_config_runs_compiled_and_auto_starts_it_as_measured(tmp_path):
    """``NAME+compiled`` is the same configuration on an engine that compiles; a choice measured
    compiled starts compiled, says what the start costs, and an eager choice stays eager."""
    from vivace.config import Config
    from vivace.errors import InputError
    from vivace_bench.quant_configs import by_name
    from vivace.runtime import engine_options

    configs = by_name(["w8a8-int8-sq+compiled"])
    assert [(c.name, c.compiled) for c in configs] == [("bf16", False), ("w8a8-int8-sq+compiled", True)]
    assert configs[1].checkpoint == "w8a8-sq"
    with pytest.raises(InputError, match="NAME\\+compiled"):
        by_name(["w9a9+compiled"])
    rows = [dict(_row("bf16", 0.0, 0.72, 300.0), load_s=24.0, compiled=False),
            dict(_row("bf16+compiled", 0.1, 0.72, 360.0), load_s=70.0, compiled=True),
            dict(_row("w8a8-int8-sq+compiled", 0.9, 0.72, 450.0), load_s=85.0, compiled=True)]
    for r in rows:
        r["engine"] = {"model": str(tmp_path), "dtype": "bfloat16", "quantization": None, "kv_cache_dtype": "auto",
                       "enforce_eager": not r["compiled"]}
    result = choose(rows)
    assert result["choice"] == "w8a8-int8-sq+compiled" and "1.50x bf16" in result["reason"]
    assert "starts in 85 s instead of 24 s" in result["reason"]
    quant_choice.save(tmp_path, {"model": "smollm2-135m", "configs": rows})
    assert choose(quant_choice.load(tmp_path, "smollm2-135m")["rows"])["reason"] == result["reason"]  # --explain's
    config = Config(home=tmp_path, model="smollm2-135m", quantization="auto")
    options = engine_options(config)
    assert options.enforce_eager is False and options.quant_label == "w8a8-int8-sq+compiled (auto)"
    quant_choice.save(tmp_path, {"model": "smollm2-135m", "configs": rows[:1]})  # only eager bf16 measured
    assert engine_options(config).enforce_eager is True
    assert engine_options(Config(home=tmp_path, model="smollm2-135m", quantization="auto", enforce_eager=False)).enforce_eager is False


@pytest.mark.engine
def test_auto_starts_the_engine_with_the_cached_choice_and_names_it_in_each_call(tmp_path, model_dir, run):
    """Wiring, with a cached result in which fp32 measured fastest: `quantization = "auto"` starts a
    float32 engine, and every call's record carries the configuration's name."""
    import torch

    from vivace.config import Config
    from vivace.runtime import complete, open_backend
    from vivace.runtime.backend import GenerationRequest

    rows = [_row("bf16", 0.0, 0.72, 400.0), _row("fp32", -0.1, 0.72, 500.0), _row("kv-fp8-e4m3", 6.0, 0.72, 900.0)]
    for r in rows:
        r.update(dtype={"fp32": "float32"}.get(r["name"], "bfloat16"))
        r["engine"] = {"model": str(model_dir), "dtype": r["dtype"], "quantization": None,
                       "kv_cache_dtype": "fp8_e4m3" if "fp8" in r["name"] else "auto"}
    quant_choice.save(tmp_path, {"model": str(model_dir), "configs": rows})
    config = Config(home=tmp_path, model=str(model_dir), quantization="auto", kv_cache_space_gib=1.0, max_num_seqs=4)

    async def go():
        backend = await open_backend(config)
        try:
            dtype = backend.inner._engine.vllm_config.model_config.dtype
            result = await complete(backend, GenerationRequest([{"role": "user", "content": "Say hi."}], max_tokens=4))
            return backend.name, dtype, result
        finally:
            await backend.aclose()

    name, dtype, result = run(go())
    assert name == "vllm[fp32 (auto)]" and result.backend == name
    assert dtype == torch.float32
