"""Load-aware fan-out: the decision under a load held open through the limiter, its trace, and the real engine's reading.

The load is driven deterministically: a fake backend holds its requests open
until the test lets them go, so the limiter counts exactly what the test put
in flight. The real engine is used only for what only it can show (its
running requests and KV use in the load reading).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from tests.helpers import VIVACE, cli_env
from vivace.agents import ask
from vivace.agents.sot.load import decide
from vivace.assembly import runtime_for
from vivace.config import Config
from vivace_bench.overhead_bench import fake_backend
from vivace.runtime.backend import Event, GenerationRequest, GenerationResult
from vivace.runtime.fake import FakeBackend
from vivace.runtime.limits import InFlightLimiter, LimitedBackend
from vivace.runtime.load import Load, StepModel, ledger_of, read_load

# The router sends this to SoT (a generic advice question; tests/agents/test_router.py covers the router).
QUESTION = "What are good habits for keeping a tidy home with little effort?"
POINTS = 6  # the fake's skeletons have six points (vivace_bench.overhead_bench.fake_backend)


class HeldBackend(FakeBackend):
    """Requests tagged ``hold`` stay open until ``let_go`` is set: load the test controls exactly."""

    def __init__(self) -> None:
        super().__init__(fake_backend(POINTS).responder)
        self.let_go = asyncio.Event()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        if request.tag == "hold":
            await self.let_go.wait()
        async for event in super().generate(request):
            yield event


async def hold(backend: LimitedBackend, n: int) -> list[asyncio.Task[Any]]:
    """Put ``n`` requests in flight through the limiter and return once the limiter counts them."""

    async def one() -> None:
        async for _ in backend.generate(GenerationRequest(messages=[{"role": "user", "content": "x"}], max_tokens=4, tag="hold")):
            pass

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    while backend.limiter.in_flight + backend.limiter.waiting < n:
        await asyncio.sleep(0)
    return tasks


async def under_load(cap: int, held: int, **options: Any) -> tuple[Any, HeldBackend, LimitedBackend]:
    """One auto question while ``held`` requests occupy the limiter of cap ``cap``."""
    options.setdefault("length_plan", False)  # the load alone sizes the fan-out here (8 points asked)
    inner = HeldBackend()
    backend = LimitedBackend(inner, InFlightLimiter(cap))
    runtime = runtime_for(Config(max_in_flight=cap), backend, save_runs=False)
    tasks = await hold(backend, held)
    try:
        trace = await ask(QUESTION, runtime, mode="auto", max_points=8, **options)
    finally:
        inner.let_go.set()
        await asyncio.gather(*tasks)
    return trace, inner, backend


def nodes(inner: FakeBackend) -> list[str]:
    return [r.tag.split("/")[-2] if "/expand/" in r.tag else r.tag.rsplit("/", 1)[-1] for r in inner.requests if r.tag != "hold"]


def test_decide_keeps_sot_caps_points_or_goes_normal() -> None:
    empty = Load(in_flight=0, waiting=0, claimed=0, capacity=32)
    assert decide(empty, 8, 2).mode == "sot" and decide(empty, 8, 2).max_points == 8 and decide(empty, 8, 2).reason is None
    some = Load(in_flight=20, waiting=0, claimed=7, capacity=32)  # 5 free
    capped = decide(some, 8, 2)
    assert (capped.mode, capped.max_points) == ("sot", 5) and "27 of 32 batch slots busy, 5 free" in capped.reason
    full = Load(in_flight=30, waiting=3, claimed=0, capacity=32)
    assert full.free == 0 and decide(full, 8, 2).mode == "normal" and "0 slot(s) for this run" in decide(full, 8, 2).reason
    shared = Load(in_flight=0, waiting=0, claimed=0, capacity=32, runs=16)  # an empty batch, 16 runs starting
    assert shared.share == 2 and (decide(shared, 8, 2).mode, decide(shared, 8, 2).max_points) == ("sot", 2)
    assert decide(Load(in_flight=0, waiting=0, claimed=0, capacity=32, runs=17), 8, 2).mode == "normal"
    kv_bound = Load(in_flight=0, waiting=0, claimed=0, capacity=32, kv_usage=0.9, kv_free_slots=1)
    assert kv_bound.free == 1 and decide(kv_bound, 8, 2).mode == "normal"  # the KV cache, not the count, is full


def test_a_full_batch_sends_a_sot_question_to_normal_and_the_trace_says_why(run) -> None:
    trace, inner, backend = run(under_load(cap=4, held=3))
    router = trace.router
    assert trace.mode == "normal" and router["mode"] == "normal"
    assert router["reason"].startswith("load: 3 of 4 batch slots busy, 1 free, 1 run(s)") and "(router: classifier: sot" in router["reason"]
    load = router["load"]
    assert load["decision"] == "normal" and load["changed"] is True
    assert (load["in_flight"], load["capacity"], load["free"], load["max_points"]) == (3, 4, 1, 0)
    assert nodes(inner) == ["normal"]  # no skeleton call was spent
    assert ledger_of(backend.limiter).claimed == 0


def test_free_slots_cap_the_points(run) -> None:
    trace, inner, backend = run(under_load(cap=8, held=4))  # 4 free of 8: SoT with at most 4 points
    router = trace.router
    assert trace.mode == "sot" and router["load"]["max_points"] == 4 and router["load"]["changed"] is True
    assert "4 free, 1 run(s) sharing them; points capped at 4" in router["reason"]
    skeleton = next(r for r in inner.requests if r.tag.endswith("/skeleton"))
    assert "\n5." in skeleton.stop  # the skeleton itself stops after point 4
    assert trace.points == ["Aspect alpha alpha", "Aspect bravo alpha", "Aspect charlie alpha", "Aspect delta alpha"]
    assert nodes(inner).count("expand") == 4
    assert ledger_of(backend.limiter).claimed == 0


def test_an_idle_batch_changes_nothing(run) -> None:
    trace, inner, _ = run(under_load(cap=32, held=0))
    load = trace.router["load"]
    assert trace.mode == "sot" and load["changed"] is False and load["free"] == 32 and load["max_points"] == 8
    assert trace.router["reason"].startswith("classifier: sot")
    assert nodes(inner).count("expand") == POINTS


def test_load_aware_off_keeps_the_routers_decision(run) -> None:
    trace, inner, _ = run(under_load(cap=4, held=3, load_aware=False))
    assert trace.mode == "sot" and "load" not in trace.router and nodes(inner).count("expand") == POINTS


def test_other_runs_sharing_the_batch_shrink_the_share(run) -> None:
    """Three more runs in progress (held in the ledger by the test): an empty batch of 8 gives this run 2 points."""

    async def one() -> tuple[Any, FakeBackend]:
        inner = fake_backend(POINTS)
        backend = LimitedBackend(inner, InFlightLimiter(8))
        runtime = runtime_for(Config(max_in_flight=8), backend, save_runs=False)
        ledger = ledger_of(backend.limiter)
        with ledger.running(), ledger.running(), ledger.running():
            trace = await ask(QUESTION, runtime, mode="auto", max_points=8)
        assert ledger.runs == 0
        return trace, inner

    trace, inner = run(one())
    load = trace.router["load"]
    assert (load["runs"], load["share"], load["free"], load["max_points"]) == (4, 2, 8, 2) and trace.mode == "sot"
    assert nodes(inner).count("expand") == 2


def test_runs_deciding_together_see_each_others_claims(run) -> None:
    """Two auto runs at once: whichever decides second sees the first's claimed points, not an empty batch."""

    async def two() -> tuple[list[Any], LimitedBackend]:
        inner = fake_backend(POINTS)
        backend = LimitedBackend(inner, InFlightLimiter(9))
        runtime = runtime_for(Config(max_in_flight=9), backend, save_runs=False)
        traces = await asyncio.gather(*(ask(QUESTION, runtime, mode="auto", max_points=8) for _ in range(2)))
        return list(traces), backend

    traces, backend = run(two())
    loads = sorted((t.router["load"] for t in traces), key=lambda load: load["busy"])
    # the first's claim, counted (less the one slot its skeleton hands over to the limiter a moment later)
    assert loads[0]["busy"] == 0 and loads[1]["busy"] >= loads[0]["max_points"] - 1
    assert loads[0]["max_points"] + loads[1]["max_points"] <= 9
    assert ledger_of(backend.limiter).claimed == 0 and ledger_of(backend.limiter).runs == 0  # every claim and run released
    assert backend.limiter.peak <= 9


def test_the_step_model_finds_the_batch_knee() -> None:
    model = StepModel()
    model.add(1, 0.017)
    assert model.knee() is None  # one batch size says nothing about how steps grow
    for batch in (4, 8, 16):
        model.add(batch, 0.016 + 0.001 * batch)  # 16 ms shared by the batch, 1 ms per sequence
    fixed, per_seq = model.fit()
    assert fixed == pytest.approx(0.016) and per_seq == pytest.approx(0.001)
    assert model.knee() == 18  # t(18) = 34 ms = 2 t(1)
    bound = StepModel()
    for batch in (1, 2, 4):
        bound.add(batch, 0.010 * batch)  # compute-bound: no shared part, every sequence costs its own step
    assert bound.knee() == 2
    flat = StepModel()
    for batch in (1, 8):
        flat.add(batch, 0.02)
    assert flat.knee() is None  # parallelism free so far: the slots decide


def test_the_knee_caps_the_capacity() -> None:
    class Stats:
        steps = StepModel()
        kv_cache_usage = 0.0

    for batch in (1, 2, 4):
        Stats.steps.add(batch, 0.010 * batch)

    class Engine:
        stats = Stats()

    load = read_load(InFlightLimiter(32), Engine())
    assert (load.knee, load.capacity, load.share) == (2, 2, 2)


def test_read_load_on_a_fake_gives_the_limiter_only() -> None:
    limiter = InFlightLimiter(5)
    load = read_load(limiter, LimitedBackend(FakeBackend(), limiter))
    assert (load.capacity, load.busy, load.free) == (5, 0, 5)
    assert load.engine_running is None and load.kv_usage is None and load.kv_free_slots is None


@pytest.mark.engine
def test_the_engine_reports_running_requests_and_kv_use(run, engine) -> None:
    """On the real engine the reading has its batch size (max_num_seqs), running requests and KV headroom."""
    limiter = InFlightLimiter(64)
    backend = LimitedBackend(engine, limiter)
    started: list[asyncio.Event] = [asyncio.Event() for _ in range(4)]

    async def one(i: int) -> GenerationResult | None:
        request = GenerationRequest(messages=[{"role": "user", "content": f"Count to fifty, part {i}."}],
                                    max_tokens=96, ignore_eos=True, tag=f"load-{i}")
        final = None
        async for event in backend.generate(request):
            started[i].set()
            if isinstance(event, GenerationResult):
                final = event
        return final

    async def measure() -> tuple[Load, list[Any]]:
        await one(0)  # alone: decode steps of one sequence
        started[0].clear()
        tasks = [asyncio.create_task(one(i)) for i in range(4)]
        for e in started:
            await e.wait()
        load = read_load(limiter, backend, request_tokens=128)
        knee_then.append(engine.stats.steps.knee())  # same tick: the steps decoded after it move the fit
        return load, await asyncio.gather(*tasks)

    knee_then: list[int | None] = []
    load, results = run(measure())
    batch = min(64, engine.options.max_num_seqs)
    assert load.batch == batch and load.capacity == min(batch, knee_then[0] or batch)  # a busy machine's knee binds
    assert load.in_flight == 4 and load.free == max(0, load.capacity - 4)
    assert load.engine_running is not None and 1 <= load.engine_running <= 4
    assert load.kv_usage is not None and 0 < load.kv_usage < 1
    assert load.kv_free_slots == int((1 - load.kv_usage) * engine.kv_capacity_tokens / 128)
    assert {1, 4} <= set(engine.stats.steps.itl) and load.knee == knee_then[0]  # decode steps at 1 and 4
    assert all(r is not None and r.output_tokens == 96 for r in results)


def test_ask_json_shows_the_load_the_decision_saw(tmp_path: Path) -> None:
    proc = subprocess.run([VIVACE, "ask", QUESTION, "--backend", "fake", "--json", "--max-in-flight", "6"],
                          capture_output=True, text=True, env=cli_env(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    load = record["router"]["load"]
    assert load["capacity"] == 6 and load["in_flight"] == 0 and load["decision"] == record["router"]["mode"]


def test_the_writers_sot_also_gives_way_to_load() -> None:
    """SoT inside an agent (long_form auto) reads the same load: a full batch keeps the writer's call normal."""
    from vivace.agents.driver import run as run_target
    from vivace_bench.pipeline_workloads import revision_pipeline

    async def main(held: int) -> dict[str, Any]:
        inner = HeldBackend()
        backend = LimitedBackend(inner, InFlightLimiter(4))
        runtime = runtime_for(Config(max_in_flight=4, backend="fake"), backend, save_runs=False)
        tasks = await hold(backend, held)
        try:
            trace = await run_target(revision_pipeline(max_rounds=0), QUESTION, runtime,
                                     options={"long_form": "auto"})
        finally:
            inner.let_go.set()
            await asyncio.gather(*tasks)
        return next(s for s in trace.steps if s["step"] == "write")["extra"]["long_form"]

    idle, busy = asyncio.run(main(0)), asyncio.run(main(3))
    assert idle["mode"] == "sot" and idle["points"] >= 2
    assert busy["mode"] == "normal" and busy["reason"].startswith("load:") and busy["load"]["changed"]


def test_a_lone_run_on_an_idle_batch_is_not_capped_by_the_knee() -> None:
    """The knee protects other runs' steps; alone, more points finish sooner, so it does not cap them."""
    load = Load(in_flight=0, waiting=0, claimed=0, capacity=2, runs=1, knee=2, batch=32)
    assert decide(load, 6, 2).max_points == 6 and decide(load, 6, 2).reason is None
    shared = Load(in_flight=1, waiting=0, claimed=0, capacity=2, runs=2, knee=2, batch=32)
    assert decide(shared, 6, 2).mode == "normal"  # one slot left of the knee's two, and another run: no fan-out
