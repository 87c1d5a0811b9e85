"""One real-engine run of the ``research`` pipeline: every stage runs and the researchers overlap.

Kept short (small token caps, no revision round) because the engine shares 2 cores.
No timing thresholds: only properties of the trace.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from vivace.agents.driver import run as run_target
from vivace.agents.driver import run_record
from vivace.assembly import runtime_for
from vivace.config import Config

pytestmark = pytest.mark.engine


def test_research_on_the_real_engine(engine: Any, run: Callable[..., Any]) -> None:
    config = Config(max_tokens=32)
    runtime = runtime_for(config, engine, save_runs=False)
    trace = run(run_target("research", "Compare electric cars and petrol cars.", runtime,
                           options={"max_branches": 3, "max_rounds": 0}))
    record = run_record(trace)
    agents = {a["name"]: a for a in record["agents"]}
    assert set(agents) == {"planner", "researcher", "writer", "critic"}
    assert all(a["calls"] >= 1 and a["output_tokens"] > 0 for a in agents.values())
    assert record["answer"].strip() and record["status"] == "done"
    researchers = [c for c in trace.calls if c.agent == "researcher"]
    assert 2 <= len(researchers) <= 3, trace.messages[0]
    # They were in flight together: each started before any of them finished.
    assert max(c.started_at for c in researchers) < min(c.ended_at for c in researchers)
    assert all(c.output_tokens <= 32 for c in trace.calls)
    assert record["parallelism"] > 0 and 0 < record["critical_path_s"] <= record["latency_s"] * 1.01
