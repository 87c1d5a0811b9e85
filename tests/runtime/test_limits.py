import asyncio

from vivace.runtime import FakeBackend, GenerationRequest, InFlightLimiter, LimitedBackend, complete


def _req(i: int) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": f"q {i}"}], max_tokens=8)


def test_limiter_caps_in_flight_across_callers() -> None:
    async def main() -> tuple[int, list[float]]:
        limiter = InFlightLimiter(3)
        # Two wrapped backends stand for two agents: they share one limiter.
        a = LimitedBackend(FakeBackend(latency_s=0.05), limiter)
        b = LimitedBackend(FakeBackend(latency_s=0.05), limiter)
        results = await asyncio.gather(*(complete(a if i % 2 else b, _req(i)) for i in range(10)))
        return limiter.peak, [r.queue_s for r in results]

    peak, queues = asyncio.run(main())
    assert peak == 3
    # 10 requests through 3 slots: at least the last wave waited for a slot.
    assert sum(q > 0.04 for q in queues) >= 4


def test_wait_counts_in_ttft_and_latency() -> None:
    async def main():
        limited = LimitedBackend(FakeBackend(latency_s=0.05), InFlightLimiter(1))
        return await asyncio.gather(complete(limited, _req(1)), complete(limited, _req(2)))

    first, second = sorted(asyncio.run(main()), key=lambda r: r.queue_s)
    assert second.queue_s >= 0.04
    assert second.e2e_s >= second.queue_s + 0.04
    assert second.ttft_s >= second.queue_s


def test_slot_released_when_consumer_stops_early() -> None:
    async def main() -> int:
        limiter = InFlightLimiter(1)
        limited = LimitedBackend(FakeBackend(), limiter)
        gen = limited.generate(_req(1))
        await gen.__anext__()
        await gen.aclose()
        return limiter.in_flight

    assert asyncio.run(main()) == 0
