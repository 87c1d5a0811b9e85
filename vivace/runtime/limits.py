"""The process-wide in-flight limit, wrapped around any backend.

LangGraph's ``max_concurrency`` applies per graph run and multiplies across
subgraphs, so the only place a real cap can live is around the backend: every
branch, agent and concurrent run in the process shares the runtime's
``InFlightLimiter`` (``vivace.runtime.runtime.Runtime.limiter``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from dataclasses import replace
from typing import Any, AsyncIterator

from vivace.runtime.backend import Backend, Event, GenerationRequest, GenerationResult, Message


class InFlightLimiter:
    """A counting gate that also records how busy it got; waiters go in priority order (lower first).

    Equal priorities keep arrival order, so with every call at 0 this is first
    come first served.
    """

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.peak = 0
        self.waiting = 0
        self._queue: list[list[Any]] = []  # [priority, arrival, future or None once it gave up]
        self._arrivals = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _check_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (a second asyncio.run): the old waiters are gone
            self._loop, self._queue = loop, []
        return loop

    async def acquire(self, priority: int = 0) -> float:
        """Wait for a slot; returns the seconds waited."""
        t0 = time.perf_counter()
        loop = self._check_loop()
        if self.in_flight < self.max_in_flight and not self._queue:
            self._take()
            return 0.0
        entry: list[Any] = [priority, next(self._arrivals), loop.create_future()]
        heapq.heappush(self._queue, entry)
        self.waiting += 1
        try:
            await entry[2]
        except BaseException:
            granted = entry[2].done() and not entry[2].cancelled()
            entry[2] = None
            if granted:  # the slot came as we were cancelled: pass it on
                self.in_flight -= 1
                self._wake()
            raise
        finally:
            self.waiting -= 1
        return time.perf_counter() - t0

    def _take(self) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    def _wake(self) -> None:
        while self.in_flight < self.max_in_flight and self._queue:
            _, _, future = heapq.heappop(self._queue)
            if future is None or future.done():
                continue
            self._take()
            future.set_result(None)

    async def release(self) -> None:
        self._check_loop()
        self.in_flight -= 1
        self._wake()

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
        waited = await self.limiter.acquire(request.priority)
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

    def __getattr__(self, item: str) -> Any:  # engine-specific extras (metrics, tokenizer)
        return getattr(self.inner, item)
