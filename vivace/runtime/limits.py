"""The process-wide in-flight limit, wrapped around any backend.

LangGraph's ``max_concurrency`` applies per graph run and multiplies across
subgraphs, so the only place a real cap can live is around the backend: every
branch, agent and concurrent run in the process shares the runtime's
``InFlightLimiter`` (``vivace.runtime.runtime.Runtime.limiter``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import AsyncIterator

from vivace.runtime.backend import Backend, Event, GenerationRequest, GenerationResult, Message


class InFlightLimiter:
    """A counting gate that also records how busy it got."""

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.peak = 0
        self.waiting = 0
        self._cond: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._cond is None or self._loop is not loop:
            self._cond, self._loop = asyncio.Condition(), loop
        return self._cond

    async def acquire(self) -> float:
        """Wait for a slot; returns the seconds waited."""
        t0 = time.perf_counter()
        cond = self._condition()
        async with cond:
            self.waiting += 1
            try:
                await cond.wait_for(lambda: self.in_flight < self.max_in_flight)
            finally:
                self.waiting -= 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        return time.perf_counter() - t0

    async def release(self) -> None:
        cond = self._condition()
        async with cond:
            self.in_flight -= 1
            cond.notify()

    def reset_peak(self) -> None:
        self.peak = self.in_flight


class LimitedBackend:
    """A backend whose calls pass the limiter first; the wait counts as queue time."""

    def __init__(self, inner: Backend, limiter: InFlightLimiter) -> None:
        self.inner = inner
        self.limiter = limiter
        self.name = inner.name
        self.model = inner.model

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        started_at = time.time()
        waited = await self.limiter.acquire()
        try:
            async for event in self.inner.generate(request):
                if isinstance(event, GenerationResult):
                    event = replace(
                        event,
                        queue_s=event.queue_s + waited,
                        ttft_s=event.ttft_s + waited,
                        e2e_s=event.e2e_s + waited,
                        started_at=started_at,
                    )
                yield event
        finally:
            await self.limiter.release()

    async def count_tokens(self, messages: list[Message], prefill: str | None = None) -> int:
        return await self.inner.count_tokens(messages, prefill)

    @property
    def context_length(self) -> int:
        return self.inner.context_length

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, item: str):  # engine-specific extras (metrics, tokenizer)
        return getattr(self.inner, item)
