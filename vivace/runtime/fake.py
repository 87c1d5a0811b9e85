"""A deterministic backend for orchestration tests and for measuring vivace's own overhead.

It never stands in for a model in a test that claims to test generation.
Like the engine under a grammar, its replies keep to a request's output spec
(``grammar=False`` passes them as written, to test the check and the retry).
Replies come from a user-supplied function (default: echo a digest of the
prompt), are streamed word by word, and take ``latency_s`` plus
``per_token_s`` per token (and ``prefill_per_token_s`` per prompt token
before the first), so orchestration timing can be simulated.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import AsyncIterator, Callable

from vivace.runtime.backend import (
    Event,
    Delta,
    GenerationRequest,
    GenerationResult,
    Message,
    Timer,
    apply_stops,
    check_fits,
)
from vivace.runtime.output import OutputInvalid, example_value

Responder = Callable[[GenerationRequest], str]


def default_responder(request: GenerationRequest) -> str:
    last = request.messages[-1]["content"]
    digest = hashlib.sha256(last.encode()).hexdigest()[:8]
    return f"Answer {digest}: " + " ".join(last.split()[:12])


def constrained(request: GenerationRequest, reply: str) -> str:
    """What a grammar lets through: ``reply`` if its output spec accepts it, else a small value the spec accepts."""
    spec = request.output
    if spec is None or spec.kind == "regex":
        return reply
    try:
        spec.validate(reply)
        return reply
    except OutputInvalid:
        pass
    if spec.kind == "choice":
        return spec.choices[0]
    digest = hashlib.sha256(request.messages[-1]["content"].encode()).hexdigest()[:8]
    return json.dumps(example_value(spec.schema or {}, f"Answer {digest}"))


class FakeBackend:
    name = "fake"

    def __init__(
        self,
        responder: Responder = default_responder,
        latency_s: float = 0.0,
        per_token_s: float = 0.0,
        context_length: int = 8192,
        model: str = "fake",
        prefill_per_token_s: float = 0.0,
        grammar: bool = True,
    ) -> None:
        self.responder = responder
        self.latency_s = latency_s
        self.per_token_s = per_token_s
        self.prefill_per_token_s = prefill_per_token_s  # a prompt-length cost, for cost-model logic
        # Like the engine, replies keep to a request's output spec (a reply that would not becomes one that does);
        # False: replies go out as written, as from an endpoint that cannot constrain decoding.
        self.grammar = grammar
        self._context_length = context_length
        self.model = model
        self.requests: list[GenerationRequest] = []
        self.closed = False

    @staticmethod
    def _tokens(text: str) -> list[str]:
        return text.split()

    async def count_tokens(self, messages: list[Message], prefill: str | None = None) -> int:
        chat = [*messages, {"role": "assistant", "content": prefill}] if prefill is not None else messages
        return sum(len(self._tokens(m["content"])) + 3 for m in chat)

    @property
    def context_length(self) -> int:
        return self._context_length

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        if self.closed:
            raise RuntimeError("FakeBackend is closed")
        timer = Timer()
        self.requests.append(request)
        prompt_tokens = await self.count_tokens(request.messages, request.prefill)
        check_fits(prompt_tokens, request.max_tokens, self._context_length)
        reply = self.responder(request)
        reply, stopped = apply_stops(constrained(request, reply) if self.grammar else reply, request.stop)
        words = self._tokens(reply)[: request.max_tokens]
        if self.latency_s or self.prefill_per_token_s:
            await asyncio.sleep(self.latency_s + self.prefill_per_token_s * prompt_tokens)
        text = ""
        for i, word in enumerate(words):
            if self.per_token_s:
                await asyncio.sleep(self.per_token_s)
            piece = word if i == 0 else " " + word
            text += piece
            timer.mark_first()
            yield Delta(piece, request.request_id)
        finish = "stop" if stopped or len(self._tokens(reply)) <= request.max_tokens else "length"
        yield GenerationResult(
            text=text,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            output_tokens=len(words),
            queue_s=0.0,
            ttft_s=timer.ttft,
            e2e_s=timer.elapsed,
            cached_tokens=None,
            started_at=timer.started_at,
            ended_at=timer.started_at + timer.elapsed,
            tag=request.tag,
            request_id=request.request_id,
            backend=self.name,
            model=self.model,
        )

    async def aclose(self) -> None:
        self.closed = True
