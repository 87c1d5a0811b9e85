"""`vivace bench overhead` on its zero-latency FakeBackend: fan-out, report schema, the fit. No timed assertions."""

from __future__ import annotations

import asyncio

import pytest

from vivace.agents.sot.skeleton import parse_skeleton
from vivace.errors import InputError
from vivace_bench import overhead_bench


@pytest.mark.parametrize("n", [2, 5, 32])
def test_skeleton_has_n_distinct_points(n: int) -> None:
    parsed = parse_skeleton("1." + overhead_bench.skeleton_text(n), max_points=n)
    assert parsed.fallback is None and len(parsed.points) == n == len(set(parsed.points))


@pytest.mark.parametrize("n", [4, 32])
def test_vivace_run_fans_out_to_n_branches(n: int) -> None:
    backend = overhead_bench.fake_backend(n)
    trace = asyncio.run(overhead_bench.vivace_run(backend, n))  # more points than the length plan's prior holds too
    assert len(trace.points) == n
    assert sorted(c.branch for c in trace.calls if c.node == "expand") == list(range(1, n + 1))
    assert len(backend.requests) == n + 1 and backend.requests[0].tag.endswith("/skeleton")


def test_consumer_gets_every_delta_and_notices_a_lost_one() -> None:
    from vivace.agents.events import BranchDelta

    backend = overhead_bench.fake_backend(3)
    trace = asyncio.run(overhead_bench.vivace_run(backend, 3))  # checks every delta reached its consumer
    received = overhead_bench.Received()
    received(BranchDelta(trace.run_id, index=1, text=overhead_bench.EXPANSION))
    with pytest.raises(RuntimeError, match="did not receive every delta"):
        received.check(trace, 3)


def test_langgraph_floor_sends_the_same_requests() -> None:
    from vivace_bench.langgraph_floor import floor_graph, floor_run

    backend = overhead_bench.fake_backend(3)
    asyncio.run(overhead_bench.vivace_run(backend, 3))
    recorded = list(backend.requests)
    backend.requests.clear()
    assert asyncio.run(floor_run(floor_graph(backend, recorded))) > 0
    assert backend.requests[0] is recorded[0] and sorted(r.tag for r in backend.requests) == sorted(r.tag for r in recorded)


def test_report_schema() -> None:
    report = asyncio.run(overhead_bench.run_bench([2, 4], repeats=2, warmup=0))
    assert [r["branches"] for r in report["rows"]] == [2, 4]
    for r in report["rows"]:
        assert set(r) >= {"vivace_ms", "baseline_ms", "overhead_ms", "overhead_paired_median_ms", "overhead_per_branch_ms",
                          "langgraph_ms", "langgraph_overhead_ms"}
        assert r["langgraph_overhead_ms"] == pytest.approx(r["langgraph_ms"] - r["baseline_ms"], abs=1e-3)
        assert r["overhead_ms"] == pytest.approx(r["vivace_ms"] - r["baseline_ms"], abs=1e-3)
        assert r["overhead_per_branch_ms"] == pytest.approx(r["overhead_ms"] / r["branches"], abs=1e-3)
    s = report["summary"]
    assert s["per_run_ms"] == report["fit"]["per_run_ms"] and s["per_branch_ms"] == report["fit"]["per_branch_ms"]
    assert report["fit"] == overhead_bench.fit(report["rows"]) and len(report["load_average_start"]) == 3
    assert report["fit_langgraph"] == overhead_bench.fit(report["rows"], "langgraph_overhead_ms")
    assert (s["langgraph_per_run_ms"], s["langgraph_per_branch_ms"]) == (report["fit_langgraph"]["per_run_ms"],
                                                                        report["fit_langgraph"]["per_branch_ms"])
    # The targets' verdicts are the fitted figures compared with the stated thresholds (two points: a fit exists).
    assert s["per_run_ms"] is not None and s["per_branch_ms"] is not None
    assert s["target_per_run_ms"] == overhead_bench.TARGET_PER_RUN_MS == 1.0
    assert s["target_per_branch_ms"] == overhead_bench.TARGET_PER_BRANCH_MS == 0.1
    assert s["per_run_ok"] is (s["per_run_ms"] <= s["target_per_run_ms"])
    assert s["per_branch_ok"] is (s["per_branch_ms"] <= s["target_per_branch_ms"])


def test_fit_recovers_a_line() -> None:
    rows = [{"branches": n, "overhead_ms": 0.7 + 0.08 * n} for n in (2, 4, 8, 16, 32)]
    fit = overhead_bench.fit(rows)
    assert fit["per_run_ms"] == pytest.approx(0.7) and fit["per_branch_ms"] == pytest.approx(0.08) and fit["r2"] == 1.0
    assert overhead_bench.fit(rows[:1])["per_run_ms"] is None


def test_bad_input() -> None:
    with pytest.raises(InputError):
        asyncio.run(overhead_bench.run_bench([1, 2], repeats=1, warmup=0))
    with pytest.raises(InputError):
        asyncio.run(overhead_bench.run_bench([2], repeats=0, warmup=0))
