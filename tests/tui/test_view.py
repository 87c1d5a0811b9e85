"""The run view over recorded event streams, rendered with rich's capture console."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from vivace.agents.events import AgentDelta, AgentDone, AgentFailed, AgentStarted
from vivace.agents.events import (
    AnswerDelta, AnswerDone, BranchDelta, BranchDone, ErrorEvent, Routed, RunStarted, SkeletonDelta, SkeletonDone,
)
from vivace.trace import CallTrace, RunTrace
from vivace.tui.view import RunView, estimate_normal_s

RID = "r1"


def call(node: str, branch: int | None, tokens: int, ttft: float, e2e: float, start: float = 0.0) -> CallTrace:
    return CallTrace(node=node, branch=branch, tag=f"{RID}/{node}", prompt_tokens=40, output_tokens=tokens, queue_s=0.0,
                     ttft_s=ttft, e2e_s=e2e, cached_tokens=0, started_at=start, ended_at=start + e2e, finish_reason="stop")


def sot_events(points: int = 3) -> list[Any]:
    names = ["Cardio health", "Mood and sleep", "Strength", "Longevity"][:points]
    events: list[Any] = [RunStarted(RID, question="Why exercise?", agent="sot"),
                         Routed(RID, mode="sot", reason="list-like question (nearest examples: 5/5 sot)")]
    events += [SkeletonDelta(RID, text=f"{i}. {n}\n") for i, n in enumerate(names, 1)]
    events.append(SkeletonDone(RID, points=names, text="", fallback=None, call=call("skeleton", None, 20, 0.2, 1.2)))
    for word in ("Regular", " exercise", " strengthens", " the", " heart."):
        for i in range(1, points + 1):
            events.append(BranchDelta(RID, index=i, text=word))
    return events


def render(view: RunView, width: int = 80, height: int = 24) -> str:
    console = Console(record=True, width=width, height=height, color_system=None, legacy_windows=False)
    console.print(view)
    return console.export_text()


def feed(view: RunView, events: list[Any]) -> RunView:
    for e in events:
        view(e)
    return view


def finished_trace(points: int = 3) -> RunTrace:
    trace = RunTrace(question="Why exercise?", mode="sot", model="m", backend="vllm", latency_s=4.0)
    trace.calls = [call("skeleton", None, 21, 0.2, 1.2)] + [call("expand", i, 40, 0.1, 2.5, 1.2) for i in range(1, points + 1)]
    return trace


def test_points_stream_side_by_side_with_header_and_footer_at_80x24() -> None:
    view = feed(RunView(probe=lambda: (3, 0.042)), sot_events(3))
    text = render(view)
    assert "route: sot" in text and "list-like question" in text
    for i, name in enumerate(["Cardio health", "Mood and sleep", "Strength"], 1):
        assert f"{i}. {name}" in text
    assert text.count("Regular exercise") == 3 and text.count("heart.") == 3  # wrapped at word boundaries
    assert "elapsed" in text and "TTFT" in text and "tok/s" in text
    assert "in flight 3" in text and "KV 4.2%" in text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80 and len(lines) <= 24


def test_skeleton_shows_while_it_streams() -> None:
    view = feed(RunView(), sot_events(2)[:3])  # started, routed, first skeleton line
    assert "skeleton" in render(view) and "1. Cardio health" in render(view)


def test_finished_sot_run_shows_an_estimate_labelled_as_one() -> None:
    events = sot_events(3) + [BranchDone(RID, index=i, point="p", text="Done text.", call=call("expand", i, 40, 0.1, 2.5)) for i in (1, 2, 3)]
    view = feed(RunView(), events + [AnswerDone(RID, answer="1. Cardio health: Done text.", mode="sot", points=["a", "b", "c"])])
    view.finish(finished_trace(3))
    text = render(view, width=100)
    assert "done: latency 4.00 s" in text
    assert "estimated speedup" in text and "est." in text
    estimate, how = estimate_normal_s(finished_trace(3))
    # 141 tokens at the skeleton's (21-1)/(1.2-0.2) = 20 tok/s, after its 0.2 s TTFT.
    assert estimate == 0.2 + 141 / 20.0 and "20.0 tok/s" in how
    assert f"{estimate / 4.0:.2f}×" in text


def test_compare_reports_a_measured_speedup() -> None:
    view = feed(RunView(), sot_events(2))
    view.finish(finished_trace(2), baseline_s=9.0)
    text = render(view, width=100)
    assert "speedup 2.25× vs normal (9.00 s)" in text and "estimated" not in text


def test_normal_answer_streams_into_one_panel() -> None:
    events = [RunStarted(RID, question="What is 2+2?", agent="sot"), Routed(RID, mode="normal", reason="math cue"),
              AnswerDelta(RID, text="2 + 2"), AnswerDelta(RID, text=" = 4.")]
    text = render(feed(RunView(), events))
    assert "route: normal" in text and "answer" in text and "2 + 2 = 4." in text


def test_pipeline_agents_are_rows_with_status_tokens_latency() -> None:
    events = [AgentStarted(RID, step="plan", agent="planner"), AgentDone(RID, step="plan", agent="planner", output="x", seconds=1.5, calls=1, output_tokens=30),
              AgentStarted(RID, step="research", agent="researcher", branch=1), AgentStarted(RID, step="research", agent="researcher", branch=2),
              AgentFailed(RID, step="research", agent="researcher", message="timed out", branch=2)]
    text = render(feed(RunView(agent="research"), events), width=100)
    assert "plan" in text and "done" in text and "30" in text and "1.5" in text
    assert "research #1" in text and "running" in text
    assert "research #2" in text and "failed" in text and "timed out" in text


def test_cancelled_run_says_so() -> None:
    view = feed(RunView(), sot_events(2))
    view.finish(None, status="cancelled")
    assert "cancelled" in render(view)


def test_eight_points_and_the_footer_fit_the_height_the_widget_gives() -> None:
    names = [f"Point {i}" for i in range(1, 9)]
    events = [RunStarted(RID, question="Why exercise?", agent="sot"), Routed(RID, mode="sot", reason="requested"),
              SkeletonDone(RID, points=names, text="", fallback=None, call=call("skeleton", None, 20, 0.2, 1.2))]
    events += [BranchDelta(RID, index=i, text="Some words about this point that go on for a while.") for i in range(1, 9)]
    view = feed(RunView(), events)
    view.max_height = 20  # 80x24 less the status line and the prompt
    text = render(view, width=80, height=24)
    lines = text.rstrip("\n").splitlines()
    assert len(lines) <= 20, len(lines)
    assert "8. Point 8" in text and "elapsed" in lines[-2]  # the footer is on screen, not cut off


def test_pipeline_rows_wait_run_and_finish_in_pipeline_order() -> None:
    from vivace.agents.driver import resolve

    view = RunView("Compare electric cars and petrol cars.", agent="research")
    view.expect_steps(resolve("research"))  # the built-in planner -> researchers -> writer -> critic
    before = render(view, width=100)
    for step, agent in (("plan", "planner"), ("research", "researcher"), ("write", "writer"), ("review", "critic")):
        assert f"{step} " in before and agent in before
    assert before.count("waiting") == 4 and "pipeline: 4 step(s) · plan, research, write, review" in before

    feed(view, [AgentStarted(RID, step="plan", agent="planner"),
                AgentDelta(RID, step="plan", agent="planner", text="1. Cost\n2. Range"),
                AgentDone(RID, step="plan", agent="planner", output="1. Cost\n2. Range", seconds=1.5, calls=1, output_tokens=12),
                AgentStarted(RID, step="research", agent="researcher", branch=1),
                AgentStarted(RID, step="research", agent="researcher", branch=2),
                AgentDelta(RID, step="write", agent="writer", text="Electric cars cost less to run.")])
    rows = [line for line in render(view, width=100).splitlines() if "│" in line and not line.startswith(("│", "╭", "╰"))]
    names = [line.split("│")[0].strip() for line in rows]
    assert names[:5] == ["plan", "research #1", "research #2", "write", "review"], names  # branches replace "research"
    assert "done" in rows[0] and "12" in rows[0] and "1.5" in rows[0]
    assert "running" in rows[1] and "running" in rows[2] and "waiting" in rows[3]
    assert "Electric cars cost less to run." in render(view, width=100)  # the step streaming now, not the plan too
    assert "1. Cost" not in render(view, width=100).split("╭─ write")[1]

    view.finish(None, status="cancelled")
    text = render(view, width=100)
    assert text.count("cancelled") >= 3  # both researchers and the footer
    assert "waiting" in text  # write and review never started


def test_research_pipeline_fits_80x24() -> None:
    from vivace.agents.driver import resolve

    view = RunView("Compare electric cars and petrol cars.", agent="research")
    view.expect_steps(resolve("research"))
    feed(view, [AgentStarted(RID, step="plan", agent="planner")] + [
        AgentStarted(RID, step="research", agent="researcher", branch=i) for i in range(1, 5)] + [
        AgentDelta(RID, step="plan", agent="planner", text="A long plan line that wraps. " * 40)])
    view.max_height = 20  # what the TUI's view widget gets at 80x24
    lines = render(view).rstrip("\n").splitlines()
    assert len(lines) <= 20 and "elapsed" in lines[-2], "\n".join(lines)


def test_finished_eight_point_run_keeps_the_whole_footer_on_screen() -> None:
    names = [f"Point {i}" for i in range(1, 9)]
    events = [RunStarted(RID, question="Why exercise?", agent="sot"), Routed(RID, mode="sot", reason="requested"),
              SkeletonDone(RID, points=names, text="", fallback=None, call=call("skeleton", None, 21, 0.2, 1.2))]
    events += [BranchDone(RID, index=i, point=n, text="Words about it. " * 6, call=call("expand", i, 40, 0.1, 2.5))
               for i, n in enumerate(names, 1)]
    trace = finished_trace(8)
    view = feed(RunView(), events)
    view.finish(trace)
    view.max_height = 20  # 80x24 in the TUI
    small = render(view, width=80, height=24).rstrip("\n").splitlines()
    assert len(small) <= 20 and small[-1].startswith("╰"), "\n".join(small)  # the footer's bottom border is there
    assert "estimated speedup" in "\n".join(small[-4:]) and "8. Point 8" in "\n".join(small)
    view.max_height = 30
    large = render(view, width=100, height=30)
    assert "estimate: 341 tokens at the skeleton's 20.0 tok/s" in large  # room to say how it was estimated
    assert len(large.rstrip("\n").splitlines()) <= 30


def test_long_question_and_a_failed_point_still_fit() -> None:
    question = "Why should anyone exercise, " * 8  # wraps to three lines in the header
    names = [f"Point {i}" for i in range(1, 7)]
    events = [RunStarted(RID, question=question, agent="sot"), Routed(RID, mode="sot", reason="requested"),
              SkeletonDone(RID, points=names, text="", fallback=None, call=call("skeleton", None, 20, 0.2, 1.2)),
              ErrorEvent(RID, node="expand", message="the engine aborted the request", branch=3)]
    view = feed(RunView(), events)
    view.max_height = 20
    lines = render(view).rstrip("\n").splitlines()
    assert len(lines) <= 20 and "elapsed" in lines[-2], "\n".join(lines)
    assert "expand 3: the engine aborted the request" in "\n".join(lines) and "6. Point 6" in "\n".join(lines)


def test_finished_pipeline_reports_its_parallelism_from_the_trace() -> None:
    view = feed(RunView(agent="research"), [AgentStarted(RID, step="plan", agent="planner"),
                                            AgentDone(RID, step="plan", agent="planner", output="x", seconds=1.0, calls=1, output_tokens=9)])
    trace = RunTrace(question="q", mode="agent:research", model="m", backend="vllm", latency_s=9.2)
    trace.parallelism = 1.63
    view.finish(trace)
    text = render(view, width=100)
    assert "done: latency 9.20 s" in text and "parallelism 1.63×" in text and "normal decoding" not in text
    assert "critical path" not in text  # a run whose record names no path of two steps or more
    trace.steps = [{"id": 0, "step": "plan", "seconds": 1.05}, {"id": 1, "step": "research", "branch": 2, "seconds": 2.5},
                   {"id": 2, "step": "research", "branch": 1, "seconds": 1.0}, {"id": 3, "step": "write", "seconds": 5.5}]
    trace.critical_path = [0, 1, 3]
    view.finish(trace)
    assert "critical path: plan 1.05 s → research #2 2.50 s → write 5.50 s" in render(view, width=100)


def test_a_real_event_stream_shows_each_text_once() -> None:
    """The driver's stream (step events around the controller's, text mirrored per step) as ask and run feed it."""
    import asyncio

    from vivace.agents.driver import ask
    from vivace.agents.pipeline.spec import single
    from vivace.agents.registry import REGISTRY
    from vivace.runtime.fake import FakeBackend

    for mode in ("normal", "sot"):
        for as_pipeline in (False, True):  # `ask --live`, then `run sot --live` (which declares its one step)
            view = RunView(agent="sot")
            if as_pipeline:
                view.expect_steps(single(REGISTRY.get("sot")))
            trace = asyncio.run(ask("How do I make good tea?", FakeBackend(), mode=mode, on_event=view))
            view.finish(trace)
            if trace.mode == "normal":
                assert view.answer.strip() == trace.answer.strip()
            else:
                assert all(b.text.count(b.text.strip()[:20]) == 1 for b in view.branches.values())
            assert len(view.agents) == (1 if as_pipeline else 0) and view.errors == []


@pytest.mark.engine
def test_in_flight_and_kv_come_from_the_real_engine_while_it_generates(engine: Any, run: Any) -> None:
    """The probe the CLI and the TUI use, on the session's engine behind the process limiter."""
    import asyncio

    from vivace.runtime import Call, CallPath, InFlightLimiter, LimitedBackend
    from vivace.tui.view import backend_probe

    backend = LimitedBackend(engine, InFlightLimiter(8))
    probe = backend_probe(backend)
    assert probe() == (0, pytest.approx(engine.stats.kv_cache_usage))

    async def sample_while_generating() -> list[tuple[int | None, float | None]]:
        path = CallPath(backend)
        calls = [Call([{"role": "user", "content": f"Count from {i} upwards."}], max_tokens=48, ignore_eos=True,
                      temperature=0.0, repetition_penalty=1.0) for i in range(4)]
        task = asyncio.gather(*(path(c) for c in calls))
        seen = []
        while not task.done():
            seen.append(probe())
            await asyncio.sleep(0.01)
        await task
        return seen

    seen = run(sample_while_generating())
    assert max(n for n, _ in seen if n is not None) == 4  # the four requests, all in flight at once
    busiest = max(kv for _, kv in seen if kv is not None)
    assert 0 < busiest < 1  # the engine's own KV figure moved while they ran
    assert probe()[0] == 0  # and the limiter is empty again
    view = RunView("q", lambda: (4, busiest))
    assert f"KV {busiest:.1%}" in render(feed(view, sot_events(2)))


def test_pipelined_points_that_stream_before_the_skeleton_is_done_keep_their_text() -> None:
    names = ["Cardio health", "Mood and sleep"]
    events: list[Any] = [RunStarted(RID, question="Why exercise?", agent="sot"),
                         Routed(RID, mode="sot", reason="requested"), SkeletonDelta(RID, text="1. Cardio health\n"),
                         BranchDelta(RID, index=1, text="Exercise strengthens the heart."),
                         SkeletonDelta(RID, text="2. Mood and sleep"),
                         SkeletonDone(RID, points=names, text="", fallback=None, call=call("skeleton", None, 9, 0.2, 1.2)),
                         BranchDelta(RID, index=2, text="It lifts the mood.")]
    view = feed(RunView(probe=lambda: (2, 0.01)), events)
    assert view.branches[1].text == "Exercise strengthens the heart." and view.branches[1].point == "Cardio health"
    assert view.branches[2].text == "It lifts the mood."
    assert "1. Cardio health" in render(view)
