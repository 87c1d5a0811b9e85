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


def test_waiters_are_served_in_priority_order_then_arrival_order() -> None:
    async def main() -> list[str]:
        limiter = InFlightLimiter(1)
        await limiter.acquire()  # the slot is taken: everyone below waits
        order: list[str] = []

        async def waiter(name: str, priority: int) -> None:
            await limiter.acquire(priority)
            order.append(name)
            await limiter.release()

        tasks = [asyncio.create_task(waiter(n, p)) for n, p in (("late", 5), ("a1", 1), ("mid", 3), ("a2", 1))]
        gone = asyncio.create_task(waiter("gave-up", 0))
        await asyncio.sleep(0.01)
        assert limiter.waiting == 5
        gone.cancel()  # a waiter that gives up must not keep or leak a slot
        await asyncio.sleep(0.01)
        await limiter.release()
        await asyncio.gather(*tasks)
        assert limiter.in_flight == 0 and limiter.waiting == 0
        return order

    assert asyncio.run(main()) == ["a1", "a2", "mid", "late"]


def test_priority_policies() -> None:
    from vivace.runtime.priority import SERVICE_BLOCK, engine_policy, priority

    assert priority("fcfs", 5, 10_000) == 0
    assert priority("critical", 3, 0) < priority("critical", 1, 0) < priority("critical", 0, 10_000) == 0
    assert priority("fair", 9, 0) == 0 < priority("fair", 0, SERVICE_BLOCK)
    # program: a run that has used less goes first whatever its place; within a run, the longer path first
    assert priority("program", 0, 0) < priority("program", 9, SERVICE_BLOCK)
    assert priority("program", 2, 0) < priority("program", 1, 0)
    # age: the run that started first goes first whatever it has used; within a run, the longer path first
    assert priority("age", 0, 10 * SERVICE_BLOCK, started_ms=1000) < priority("age", 9, 0, started_ms=1001)
    assert priority("age", 2, 0, started_ms=1000) < priority("age", 1, 0, started_ms=1000)
    assert engine_policy("fcfs") == "fcfs" and engine_policy("program") == "priority"
    assert engine_policy("age") == "priority"
