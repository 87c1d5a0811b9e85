"""What an engine is built with, and whether this machine and model can build it.

Why apart from the engine: checking options, choosing a dtype for the CPU at
hand and turning options into vLLM's engine arguments need no vLLM, so a
config error is one line before the engine loads and the GPU paths are unit
tested without one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from vivace.errors import ConfigError


@dataclass
class EngineOptions:
    """What the engine is built with; mirrors the config keys of the same names."""

    model: str
    dtype: str = "auto"
    max_model_len: int | None = None
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    enable_prefix_caching: bool = True
    max_num_seqs: int = 64
    kv_cache_space_gib: float = 1.0
    gpu_memory_utilization: float | None = None
    enforce_eager: bool = True
    seed: int = 0
    served_model_name: str | None = None
    quant_label: str | None = None  # the quantization configuration, when `auto` chose it; named in traces
    scheduling_policy: str = "fcfs"  # "priority": the engine's queue honours each request's priority



def cpu_engine_env(kv_cache_space_gib: float) -> dict[str, str]:
    """Environment a vLLM engine process needs here: no telemetry, an explicit KV space.

    Shared by the in-process engine and by the api_server the tests start.
    """
    env = {
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # vLLM reads GiB as an integer; round up so a small budget still starts.
        "VLLM_CPU_KVCACHE_SPACE": str(max(1, math.ceil(kv_cache_space_gib))),
    }
    if (os.cpu_count() or 1) <= 2:
        # vLLM reserves a core for its scheduler; on 2 cores that halves the
        # worker's threads. Measured here: 8x64 tokens in 4.8 s instead of 6.6 s.
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    if "LD_PRELOAD" not in os.environ and (openmp := intel_openmp()):
        # vLLM's CPU worker asks for it ("libiomp is not found in LD_PRELOAD"); the engine
        # process is a fresh one, so it takes effect there. An exported LD_PRELOAD, even empty, wins.
        env["LD_PRELOAD"] = openmp
    return env


def intel_openmp() -> str | None:
    """Intel's OpenMP runtime, when the CPU build of vLLM brought it along (the ``intel-openmp`` wheel).

    Preloaded, it serves the OpenMP calls of torch's and vLLM's CPU kernels
    instead of GNU's: single-stream decode about 10% faster here
    (docs/benchmarks/hardware.md).
    """
    from importlib import metadata

    try:
        metadata.distribution("vllm-cpu")
        files = metadata.distribution("intel-openmp").files or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == "libiomp5.so":
            path = os.path.realpath(file.locate())
            return path if os.path.isfile(path) else None
    return None


def configure_vllm_env(options: EngineOptions) -> None:
    """Set what vLLM reads at import time; a value the user exported wins."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    for key, value in cpu_engine_env(options.kv_cache_space_gib).items():
        if key == "VLLM_CPU_KVCACHE_SPACE":
            os.environ[key] = value  # the config is the source of truth for KV space
        else:
            os.environ.setdefault(key, value)
    if os.path.isdir(options.model):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            line = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.partition(":")[2].split())


def _cpu_has_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def cpu_supports_fp8_kv() -> bool:
    """vllm-cpu's FP8 KV cache kernels need AVX-512 or AMX; it fails deep in a worker otherwise."""
    return bool({"avx512f", "amx_tile"} & _cpu_flags())


# vLLM reads a checkpoint's calibrated KV scales for fp8_e4m3 only, and refuses e5m2 with them.
E5M2_WITH_SCALES = ("kv_cache_dtype 'fp8_e5m2' cannot use the calibrated KV scales this checkpoint carries "
                    "(vLLM takes them for fp8_e4m3 only); use fp8_e4m3 with it")


def _model_config(model: str) -> dict[str, Any]:
    """A local model folder's ``config.json`` (empty when there is none, e.g. a hub id)."""
    try:
        with open(os.path.join(model, "config.json"), encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _model_context(config: dict[str, Any]) -> int | None:
    """The context length a model's ``config.json`` declares, if it says."""
    config = config.get("text_config", config)
    value = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def check_supported(options: EngineOptions) -> None:
    """Refuse, in one line naming the key and before the engine starts, what cannot run.

    vLLM would find these too, after seconds of start, as "failed to load: 1
    validation error for ModelConfig" that names neither the key nor what is allowed.
    """
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS
    from vllm.platforms import current_platform

    if options.quantization is not None and options.quantization not in QUANTIZATION_METHODS:
        raise ConfigError(
            f"quantization: {options.quantization!r} is not a method vLLM knows; one of {', '.join(QUANTIZATION_METHODS)}"
        )
    model_config = _model_config(options.model)
    declared = _model_context(model_config)
    if (options.max_model_len is not None and declared is not None and options.max_model_len > declared
            and os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN") != "1"):
        raise ConfigError(
            f"max_model_len: {options.max_model_len} is more than the model's context of {declared} tokens "
            "(set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 to force it)"
        )
    if options.kv_cache_dtype == "fp8_e5m2" and (model_config.get("quantization_config") or {}).get("kv_cache_scheme"):
        raise ConfigError(E5M2_WITH_SCALES)
    if not current_platform.is_cpu():
        return
    if options.kv_cache_dtype.startswith("fp8") and not cpu_supports_fp8_kv():
        raise ConfigError(
            f"kv_cache_dtype {options.kv_cache_dtype!r} needs a CPU with AVX-512 or AMX on vllm-cpu; "
            "this one has neither (use auto, or a GPU)"
        )


def host_dtype() -> str:
    """float32 on a CPU without native bf16, else vLLM's own choice.

    bf16 is emulated there: measured on an AVX2-only EPYC, 8 concurrent
    64-token requests took 13.7 s in bf16 and 4.8 s in float32.
    """
    from vllm.platforms import current_platform

    return "float32" if current_platform.is_cpu() and not _cpu_has_bf16() else "auto"


def resolve_dtype(dtype: str) -> str:
    return host_dtype() if dtype == "auto" else dtype


def engine_args(options: EngineOptions) -> dict[str, Any]:
    """vLLM's ``AsyncEngineArgs`` for ``options``: the one translation, on a CPU and a GPU alike."""
    args: dict[str, Any] = dict(
        model=options.model,
        dtype=resolve_dtype(options.dtype),
        max_model_len=options.max_model_len,
        quantization=options.quantization,
        kv_cache_dtype=options.kv_cache_dtype,
        enable_prefix_caching=options.enable_prefix_caching,
        max_num_seqs=options.max_num_seqs,
        enforce_eager=options.enforce_eager,
        seed=options.seed,
        disable_log_stats=False,  # per-request queue timestamps need it
        use_tqdm_on_load=False,
        scheduling_policy=options.scheduling_policy,
    )
    if options.gpu_memory_utilization is not None:
        args["gpu_memory_utilization"] = options.gpu_memory_utilization
    if options.served_model_name:
        args["served_model_name"] = options.served_model_name
    return args
