"""`vivace bench overhead`: vivace's own cost per run and per branch, on a zero-latency FakeBackend.

For each branch count N, a SoT run fans out to N points (the fake model
answers every skeleton request with N numbered points). The baseline replays
the very requests that run sent, with no graph: the skeleton call, then
``asyncio.gather`` of the N expansion calls. Both consume the same backend
stream the same way, so the difference is what vivace adds: the LangGraph
controller, prompt rendering, skeleton parsing, events and traces.

The vivace run streams to a consumer (``Received``) that keeps every text
event's text, and each run checks that the consumer got all of each point's
and the skeleton's text: streaming stays live in what is measured.

vivace runs through one runtime built up front, as the CLI and the server
run every request through theirs (``ask`` with a bare backend builds a
default one per run, about 0.05 ms more). vivace's time is the run's ``RunTrace.latency_s``; the baseline has no trace
and is timed the same way (``perf_counter`` around the whole run). The two
alternate within every repeat so load drift hits both; medians are reported,
and a least-squares line fits overhead = per_run + per_branch x N. A third
run per repeat sends the same requests through the SoT graph a LangGraph user
would write by hand (``langgraph_floor``): what hand-rolled LangGraph costs
for the same job, fitted the same way.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

from vivace.errors import InputError

# One branch is not a SoT run: the skeleton parser falls back to normal decoding below 2 points
# (vivace.agents.sot.skeleton.MIN_POINTS), whatever ask's min_points says.
DEFAULT_BRANCHES = (2, 4, 8, 16, 32)
# The question names its count: the SoT length plan (vivace.agents.sot.length_plan) then asks for n points
# instead of the ~7 its prior length holds, and the plan stays in the measured path.
QUESTION = "What are {n} benefits of a daily walk?"
EXPANSION = "This point is explained in one short sentence with a few words."
TARGET_PER_RUN_MS = 1.0
TARGET_PER_BRANCH_MS = 0.1


def skeleton_text(n: int) -> str:
    """A clean skeleton of ``n`` distinct points, continuing the prompt's "1." prefill."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    points = [f"Aspect {words[i % 8]} {words[(i // 8) % 8]}" for i in range(n)]
    return " " + "\n".join(p if i == 0 else f"{i + 1}. {p}" for i, p in enumerate(points))


def fake_backend(n: int) -> Any:
    """A zero-latency FakeBackend whose skeletons have ``n`` points and whose expansions are one sentence."""
    from vivace.runtime.fake import FakeBackend

    skeleton = skeleton_text(n)

    def responder(request: Any) -> str:
        if request.tag.endswith("/skeleton"):
            return skeleton
        if "/expand/" in request.tag:
            return EXPANSION
        return "A plain answer in one short sentence."

    return FakeBackend(responder)


class Received:
    """The run's event consumer: the text of every delta, by stream, as a UI would keep it."""

    def __init__(self) -> None:
        self.text: dict[tuple[str, Any], list[str]] = {}

    def __call__(self, event: Any) -> None:
        if event.kind in ("skeleton_delta", "branch_delta"):
            self.text.setdefault((event.kind, getattr(event, "index", None)), []).append(event.text)

    def check(self, trace: Any, n: int) -> None:
        """Raise unless every point's and the skeleton's whole text reached the consumer."""
        got = {key: "".join(parts) for key, parts in self.text.items()}
        want: dict[tuple[str, Any], str] = {("skeleton_delta", None): (trace.sot or {}).get("skeleton") or "",
                **{("branch_delta", i): EXPANSION for i in range(1, n + 1)}}
        if got != want:
            raise RuntimeError(f"the consumer did not receive every delta: {sorted(set(got) ^ set(want))} differ")


async def vivace_run(runtime: Any, n: int) -> Any:
    """One SoT run of ``n`` points; ``runtime`` is a Runtime or a bare backend (which gets a default runtime per run)."""
    from vivace.agents import ask

    received = Received()
    trace = await ask(QUESTION.format(n=n), runtime, mode="sot", max_points=n, min_points=1, max_tokens=512, on_event=received)
    fallback = trace.sot["fallback"] if trace.sot else None
    if len(trace.points) != n or fallback:
        raise RuntimeError(f"expected {n} points, got {len(trace.points)} ({fallback})")
    received.check(trace, n)
    return trace


async def baseline_run(backend: Any, requests: list[Any]) -> float:
    """The same calls without vivace: the skeleton, then every expansion at once. Seconds."""
    from vivace.runtime import complete

    t0 = time.perf_counter()
    await complete(backend, requests[0])
    await asyncio.gather(*(complete(backend, r) for r in requests[1:]))
    return time.perf_counter() - t0


async def measure(n: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Medians over ``repeats`` alternating vivace / baseline / bare LangGraph runs with ``n`` branches."""
    from vivace.assembly import runtime_for
    from vivace.config import Config
    from vivace_bench.langgraph_floor import floor_graph, floor_run  # LangGraph waits for a run (`vivace --help`)

    backend = fake_backend(n)
    runtime = runtime_for(Config(), backend, save_runs=False)  # once, as the CLI and the server build theirs
    await vivace_run(runtime, n)
    recorded = list(backend.requests)  # skeleton first, then the n expansions
    assert len(recorded) == n + 1 and recorded[0].tag.endswith("/skeleton")
    graph = floor_graph(backend, recorded)
    vivace_s: list[float] = []
    base_s: list[float] = []
    floor_s: list[float] = []
    for i in range(warmup + repeats):
        backend.requests.clear()
        trace = await vivace_run(runtime, n)
        base = await baseline_run(backend, recorded)
        floor = await floor_run(graph)
        if i >= warmup:
            vivace_s.append(trace.latency_s)
            base_s.append(base)
            floor_s.append(floor)
    diffs = [(v - b) * 1000 for v, b in zip(vivace_s, base_s)]
    return {
        "branches": n,
        "repeats": repeats,
        "vivace_ms": round(statistics.median(vivace_s) * 1000, 4),
        "baseline_ms": round(statistics.median(base_s) * 1000, 4),
        "overhead_ms": round((statistics.median(vivace_s) - statistics.median(base_s)) * 1000, 4),
        "overhead_paired_median_ms": round(statistics.median(diffs), 4),
        "overhead_per_branch_ms": round((statistics.median(vivace_s) - statistics.median(base_s)) * 1000 / n, 4),
        "vivace_min_ms": round(min(vivace_s) * 1000, 4),
        "baseline_min_ms": round(min(base_s) * 1000, 4),
        "langgraph_ms": round(statistics.median(floor_s) * 1000, 4),
        "langgraph_overhead_ms": round((statistics.median(floor_s) - statistics.median(base_s)) * 1000, 4),
    }


def fit(rows: list[dict[str, Any]], key: str = "overhead_ms") -> dict[str, float | None]:
    """Least squares: ``key`` = per_run_ms + per_branch_ms x branches."""
    xs = [float(r["branches"]) for r in rows]
    ys = [float(r[key]) for r in rows]
    if len(set(xs)) < 2:
        return {"per_run_ms": None, "per_branch_ms": None, "r2": None}
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys))
    return {
        "per_run_ms": round(intercept, 4),
        "per_branch_ms": round(slope, 4),
        "r2": round(1 - ss_res / ss_tot, 4) if ss_tot else None,
    }


async def run_bench(branches: list[int], repeats: int, warmup: int, progress: Any = None,
                    report: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure every branch count; ``report`` (when given) holds the rows and fits so far, so an interrupt keeps them."""
    if any(n < 2 for n in branches) or repeats < 1 or warmup < 0:
        raise InputError("--branches values must be >= 2 (a SoT run has at least 2 points), --repeats >= 1, --warmup >= 0")
    from vivace_bench.backend_bench import machine_info

    report = report if report is not None else {}
    report.update({
        "bench": "overhead",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {
            "backend": "fake (zero latency)", "mode": "sot", "branches": branches, "repeats": repeats, "warmup": warmup,
            "vivace_timing": "RunTrace.latency_s", "runtime": "one, built before the runs (as the CLI's and the server's)",
            "langgraph_floor": "the same requests through a bare StateGraph: skeleton node, a Send per expansion, join", "consumer": "every skeleton and point delta, checked per run", "baseline": "skeleton call, then asyncio.gather of the same expansion requests",
        },
        "machine": machine_info(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "rows": [],
    })
    for n in branches:
        report["rows"].append(await measure(n, repeats, warmup))
        _summarize(report)
        if progress:
            progress(report["rows"][-1])
    return report


def _summarize(report: dict[str, Any]) -> None:
    """The fits over the rows measured so far (a single row fits nothing: its fields are None)."""
    rows = report["rows"]
    line = fit(rows)
    floor = fit(rows, "langgraph_overhead_ms")
    report.update({
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "fit": line,
        "fit_paired": fit(rows, "overhead_paired_median_ms"),
        "fit_langgraph": floor,
        "summary": {
            "per_run_ms": line["per_run_ms"],
            "per_branch_ms": line["per_branch_ms"],
            "target_per_run_ms": TARGET_PER_RUN_MS,
            "target_per_branch_ms": TARGET_PER_BRANCH_MS,
            "langgraph_per_run_ms": floor["per_run_ms"],
            "langgraph_per_branch_ms": floor["per_branch_ms"],
            "per_run_ok": None if line["per_run_ms"] is None else line["per_run_ms"] <= TARGET_PER_RUN_MS,
            "per_branch_ok": None if line["per_branch_ms"] is None else line["per_branch_ms"] <= TARGET_PER_BRANCH_MS,
        },
    })
