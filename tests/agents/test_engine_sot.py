"""The controller on the real embedded engine: few, short runs that check real properties."""

from __future__ import annotations

import pytest

from vivace.agents import Event, ask
from vivace.agents.sot.length_plan import LengthPlan

pytestmark = pytest.mark.engine


def test_sot_expands_points_concurrently_with_prefix_hits(engine, run) -> None:
    events: list[Event] = []
    trace = run(
        ask(
            "What are the benefits of regular exercise?",
            engine,
            mode="sot",
            max_tokens=160,
            max_points=4,
            on_event=events.append,
        )
    )
    points = trace.points
    assert trace.mode == "sot" and trace.sot["fallback"] is None, trace.sot
    assert 2 <= len(points) <= 4
    expands = [c for c in trace.calls if c.node == "expand"]
    assert sorted(c.branch for c in expands) == list(range(1, len(points) + 1))
    # Concurrent on the engine: every expansion started before any of them ended.
    assert max(c.started_at for c in expands) < min(c.ended_at for c in expands)
    # The shared head of the expansion prompts (instructions, question, skeleton) came from the prefix cache.
    assert sum(c.cached_tokens or 0 for c in expands) > 0
    # The length plan's equal budgets and floors (min_tokens) held on the engine.
    budget, floor = LengthPlan(**trace.sot["length_plan"]).point_budget(len(points))
    assert all(floor <= c.output_tokens <= budget for c in expands), [c.output_tokens for c in expands]
    skeleton = next(c for c in trace.calls if c.node == "skeleton")
    assert skeleton.output_tokens > 0 and skeleton.prompt_tokens > 0
    lines = trace.answer.splitlines()
    assert len(lines) == len(points)
    for i, (line, point) in enumerate(zip(lines, points), 1):
        assert line.startswith(f"{i}. {point}")
    assert len(trace.answer) > sum(len(p) for p in points) + 40  # expansions added real text
    kinds = [e.kind for e in events if not e.kind.startswith(("agent_", "run_"))]  # the controller's own stages
    assert kinds.index("skeleton_done") < kinds.index("branch_delta") and kinds[-1] == "answer_done"
    assert [e.kind for e in events[:2]] == ["run_started", "agent_started"]  # the driver around the step
    assert [e.kind for e in events[-2:]] == ["agent_done", "run_finished"]
    assert trace.error is None and trace.latency_s > 0


def test_auto_sends_arithmetic_to_one_normal_call(engine, run) -> None:
    trace = run(ask("What is 12 * 7?", engine, mode="auto", max_tokens=32))
    assert trace.mode == "normal" and trace.router["reason"] == "cue: math"
    assert [c.node for c in trace.calls] == ["normal"]
    assert trace.answer and trace.calls[0].output_tokens <= 32


def test_pipelined_sot_expands_points_while_the_skeleton_is_decoded(engine, run) -> None:
    events: list[Event] = []
    trace = run(ask("What are the benefits of regular exercise?", engine, mode="sot", max_tokens=160, max_points=4,
                    pipelined=True, on_event=events.append))
    points = trace.points
    assert trace.mode == "sot" and trace.sot["fallback"] is None and len(points) >= 2, trace.sot
    skeleton = next(c for c in trace.calls if c.node == "skeleton")
    expands = sorted((c for c in trace.calls if c.node == "expand"), key=lambda c: c.branch)
    assert [c.branch for c in expands] == list(range(1, len(points) + 1))
    # The first point went out while the skeleton was still being decoded, and that overlap is recorded.
    assert expands[0].started_at < skeleton.ended_at
    assert trace.sot["stages"]["skeleton_hidden"] > 0
    kinds = [e.kind for e in events]
    assert kinds.index("branch_delta") < kinds.index("skeleton_done")
    # The answer is still the points in order, each expanded.
    lines = trace.answer.splitlines()
    assert len(lines) == len(points)
    for i, (line, point) in enumerate(zip(lines, points), 1):
        assert line.startswith(f"{i}. {point}")
    assert len(trace.answer) > sum(len(p) for p in points) + 40
