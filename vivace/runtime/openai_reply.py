"""One streamed chat answer as it arrives from an OpenAI-compatible server.

Why its own object: the client keeps promises the server may not (stop
strings, the token cap, cutting a strict server's echo of the prefill), and
an answer can span servers: when one dies mid-answer, the next continues the
same ``Reply`` from its text so far.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from vivace.runtime.backend import Delta, Event, GenerationRequest, GenerationResult, Timer


class Reply:
    """One streamed answer as it arrives: stop strings, the prefill's echo, usage."""

    def __init__(self, request: GenerationRequest, echo: str | None, timer: Timer,
                 queue: asyncio.Queue[Event | BaseException | None]) -> None:
        self.request, self.timer, self.queue = request, timer, queue
        self.echo = echo.strip() if echo and echo.strip() else None  # held back until it can be cut
        self.pending = ""
        self.stop_from: int | None = None  # where stop strings may start to count (None: not yet, min_tokens)
        self.parts: list[str] = []
        self.finish: str | None = None
        self.usage: Any = None
        self.chunks = 0  # chunks with text: each holds at least one token
        self.sent = False
        self.overflow = False  # more text chunks than max_tokens: the server ignored the cap
        self.waited = 0.0  # seconds spent waiting on endpoints' request rates
        self.resumes = 0
        self.carried = 0  # tokens streamed by servers that died before reporting usage

    def resume_point(self) -> GenerationRequest | None:
        """After a server died mid-answer: the same call, continuing the text so far with the tokens left."""
        if not self.resumes or not self.parts:
            return None
        self.carried, self.usage = self.chunks, None
        prefill = (self.request.prefill or "") + "".join(self.parts)
        return replace(self.request, prefill=prefill, max_tokens=self.request.max_tokens - self.chunks,
                       min_tokens=max(0, self.request.min_tokens - self.chunks))

    def take(self, chunk: Any) -> bool:
        """Consume one chunk; True when the answer ends here (a stop string, or past the token cap)."""
        if getattr(chunk, "usage", None):
            self.usage = chunk.usage
        for choice in getattr(chunk, "choices", None) or []:
            piece = choice.delta.content if choice.delta is not None else None
            if piece:
                if self.chunks >= self.request.max_tokens:
                    self.overflow, self.finish = True, "length"
                    return True
                self.chunks += 1
                self.timer.mark_first()
                if self._text(piece):
                    return True
            if choice.finish_reason:
                self.finish = choice.finish_reason
        return False

    def _text(self, piece: str) -> bool:
        text = self.pending + piece
        if self.echo is not None:
            stripped = text.lstrip()
            if len(stripped) < len(self.echo) and self.echo.startswith(stripped):
                self.pending = text
                return False  # could still be the echo
            text = stripped[len(self.echo):] if stripped.startswith(self.echo) else text
            self.echo = None
        self.pending = ""
        before = "".join(self.parts)
        done = before + text
        # Like the server, no stop string ends the answer before ``min_tokens``: the search starts where they ran out.
        if self.stop_from is None and self.chunks > self.request.min_tokens:
            self.stop_from = len(before)
        cut = -1 if self.stop_from is None else min(
            (i for s in self.request.stop if (i := done.find(s, self.stop_from)) >= 0), default=-1)
        if cut >= 0:
            text = text[: max(0, cut - (len(done) - len(text)))]
            self.finish = "stop"
        if text:
            self.parts.append(text)
            self.sent = True
            self.queue.put_nowait(Delta(text, self.request.request_id))
        return cut >= 0

    def result(self, backend: str, model: str) -> GenerationResult:
        if self.pending:  # the stream ended inside a possible echo: it was the answer after all
            self.echo, pending, self.pending = None, self.pending, ""
            self._text(pending)
        usage = self.usage
        details = getattr(usage, "prompt_tokens_details", None)
        elapsed = self.timer.elapsed
        return GenerationResult(
            text="".join(self.parts),
            finish_reason=self.finish or "unknown",
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=self.carried + int(getattr(usage, "completion_tokens", 0) or self.chunks - self.carried),
            queue_s=self.waited,
            ttft_s=self.timer.ttft,
            e2e_s=elapsed,
            cached_tokens=getattr(details, "cached_tokens", None),
            started_at=self.timer.started_at,
            ended_at=self.timer.started_at + elapsed,
            tag=self.request.tag,
            request_id=self.request.request_id,
            backend=backend,
            model=model,
        )
