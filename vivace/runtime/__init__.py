"""Everything that talks to a model. Nothing outside this package imports vLLM or an HTTP client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vivace.config import Config
from vivace.errors import BackendError
from vivace.runtime.backend import (
    Backend,
    Delta,
    Event,
    GenerationRequest,
    GenerationResult,
    Message,
)
from vivace.runtime.call import Call, CallPath, ContextPolicy, complete
from vivace.runtime.fake import FakeBackend
from vivace.runtime.limits import InFlightLimiter, LimitedBackend

if TYPE_CHECKING:
    from vivace.runtime.vllm_options import EngineOptions

__all__ = [
    "Backend",
    "Call",
    "CallPath",
    "ContextPolicy",
    "Delta",
    "Event",
    "FakeBackend",
    "GenerationRequest",
    "GenerationResult",
    "InFlightLimiter",
    "LimitedBackend",
    "Message",
    "complete",
    "engine_options",
    "open_backend",
]


def engine_options(config: Config) -> "EngineOptions":
    """What an in-process engine for ``config`` (or one of its ``for_model`` configs) is started with.

    A model name is resolved here (the embedded one is converted on first use);
    a hub id or a folder is passed on as is.
    """
    from vivace.runtime.models import resolve
    from vivace.runtime.priority import engine_policy
    from vivace.runtime.vllm_options import EngineOptions

    engine: dict[str, Any] = {"model": resolve(config.model, config.home), "dtype": config.dtype, "quantization": config.quantization,
              "kv_cache_dtype": config.kv_cache_dtype, "label": None}
    if config.quantization and config.quantization.startswith("auto"):  # the per-machine choice
        from vivace.runtime.quant_choice import auto_engine

        engine = auto_engine(config.quantization, str(config.model), config.home)
    return EngineOptions(
        model=engine["model"],
        dtype=engine["dtype"],
        max_model_len=config.max_model_len,
        quantization=engine["quantization"],
        kv_cache_dtype=engine["kv_cache_dtype"],
        quant_label=engine["label"],
        enable_prefix_caching=config.enable_prefix_caching,
        max_num_seqs=config.max_num_seqs,
        kv_cache_space_gib=config.kv_cache_space_gib,
        gpu_memory_utilization=config.gpu_memory_utilization,
        enforce_eager=config.enforce_eager and engine.get("enforce_eager", True),  # auto may have measured it compiled
        seed=config.seed,
        scheduling_policy=engine_policy(config.scheduling),
        served_model_name=config.served_model_name or _display_name(config.model),
    )


async def open_backend(config: Config, limiter: InFlightLimiter | None = None) -> LimitedBackend:
    """The configured backend, behind the process-wide in-flight limiter."""
    inner: Backend
    if config.backend == "vllm":
        from vivace.runtime.vllm_engine import VLLMBackend

        inner = await VLLMBackend.start(engine_options(config))
    elif config.backend == "openai":
        from vivace.runtime.openai_http import OpenAIBackend

        if not config.base_urls:
            raise BackendError("backend 'openai' needs at least one base URL (--base-url or base_urls)")
        model = config.served_model_name or (None if config.model == "smollm2-135m" else config.model)
        inner = await OpenAIBackend.connect(
            config.base_urls,
            model,
            api_key_env=config.api_key_env,
            timeout_s=config.request_timeout_s,
            retries=config.connect_retries,
            dialect=config.openai_dialect,
            requests_per_minute=config.requests_per_minute,
            prefix_affinity=config.prefix_affinity,
        )
    else:
        inner = FakeBackend()
    return LimitedBackend(inner, limiter or InFlightLimiter(config.max_in_flight))


def _display_name(model: str) -> str:
    """A short name for traces: the registry name, or a folder's last part."""
    from pathlib import Path

    return Path(model).name if "/" in model and Path(model).expanduser().exists() else model
