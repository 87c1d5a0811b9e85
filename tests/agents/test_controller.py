"""The controller graph on FakeBackend: fan-out, join order, events, faults, cancellation."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import pytest

from tests.agents.fakes import SKELETON, sot_responder as responder
from vivace.agents import (
    AnswerDone,
    BranchDone,
    ErrorEvent,
    Event,
    SkeletonDone,
    ask as ask_question,
)
from vivace.errors import RunError
from vivace.errors import InputError
from vivace.runtime.backend import Event as BackendEvent
from vivace.runtime.backend import GenerationRequest
from vivace.runtime.fake import FakeBackend


class ScriptedBackend(FakeBackend):
    """FakeBackend with a per-point delay and optional failures, to shape branch timing."""

    def __init__(self, delays: dict[int, float] | None = None, fail: set[int] | None = None, **kw: object) -> None:
        super().__init__(kw.pop("responder", responder), **kw)  # type: ignore[arg-type]
        self.delays = delays or {}
        self.fail = fail or set()
        self.active = 0
        self.peak = 0
        self.abandoned: set[int] = set()  # the points whose generation was stopped before it ended

    async def generate(self, request: GenerationRequest) -> AsyncIterator[BackendEvent]:
        index = int(request.tag.rsplit("/", 1)[1]) if "/expand/" in request.tag else 0
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delays.get(index, 0.0))
            if index in self.fail:
                raise RuntimeError(f"engine lost point {index}")
            async for event in super().generate(request):
                yield event
        except (asyncio.CancelledError, GeneratorExit):
            self.abandoned.add(index)
            raise
        finally:
            self.active -= 1


def ask(backend: FakeBackend, question: str = "How do I make good tea?", **kw: object):
    kw.setdefault("length_plan", False)  # these tests pin the skeleton's own count; tests/agents/test_length_plan.py plans
    events: list[Event] = []
    trace = asyncio.run(ask_question(question, backend, on_event=events.append, **kw))  # type: ignore[arg-type]
    return trace, events


def test_sot_fans_out_one_branch_per_point_and_joins_in_order() -> None:
    backend = ScriptedBackend(delays={1: 0.08, 2: 0.06, 3: 0.04, 4: 0.0})  # finish in reverse order
    trace, events = ask(backend, mode="sot")
    assert trace.mode == "sot"
    assert trace.points == ["Brew fresh tea", "Choose good leaves", "Mind the water", "Steep briefly"]
    expands = [c for c in trace.calls if c.node == "expand"]
    assert sorted(c.branch for c in expands) == [1, 2, 3, 4]  # the duplicate 5th point was dropped
    assert backend.peak >= 4  # all branches in flight at once
    done_order = [e.index for e in events if isinstance(e, BranchDone)]
    assert done_order == [4, 3, 2, 1]
    assert trace.answer.splitlines() == [
        "1. Brew fresh tea: Detail number 1 is explained here.",
        "2. Choose good leaves: Detail number 2 is explained here.",
        "3. Mind the water: Detail number 3 is explained here.",
        "4. Steep briefly: Detail number 4 is explained here.",
    ]
    assert trace.error is None and trace.sot["failed_points"] == {}
    assert set(trace.sot["stages"]) >= {"route", "skeleton", "expand", "join", "total"}


def test_event_order_and_payloads() -> None:
    trace, everything = ask(ScriptedBackend(), mode="sot")
    # One vocabulary: the run driver's step events wrap the controller's own, and its text is mirrored per step.
    # The driver opens and closes every run; its step events wrap the controller's, whose text is mirrored per step.
    assert [e.kind for e in everything[:2]] == ["run_started", "agent_started"]
    assert [e.kind for e in everything[-2:]] == ["agent_done", "run_finished"]
    started, finished = everything[0], everything[-1]
    assert (started.question, started.agent, started.resumed_from) == (trace.question, "sot", None)
    assert (finished.status, finished.answer, finished.latency_s) == ("done", trace.answer, trace.latency_s)
    mirrored = [e for e in everything if e.kind == "agent_delta"]
    assert "".join(e.text for e in mirrored if e.branch == 1) == "".join(
        e.text for e in everything if e.kind == "branch_delta" and e.index == 1)
    events = [e for e in everything[1:-1] if not e.kind.startswith("agent_")]
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["routed", "skeleton_delta"]
    assert events[0].requested_mode == "sot"
    assert all(e.step == "sot" for e in events)  # SoT's stage events are its step's
    assert kinds[-1] == "answer_done"
    first_branch = kinds.index("branch_delta")
    assert kinds.index("skeleton_done") < first_branch
    assert all(k in ("branch_delta", "branch_done") for k in kinds[first_branch:-1])
    assert kinds.count("branch_done") == 4
    assert all(e.run_id == trace.run_id for e in events)
    skeleton = next(e for e in events if isinstance(e, SkeletonDone))
    assert skeleton.call.node == "skeleton" and len(skeleton.points) == 4
    assert isinstance(events[-1], AnswerDone) and events[-1].answer == trace.answer
    assert all(e.to_dict()["kind"] == e.kind for e in events)


def test_expansion_requests_share_a_prefix_and_bound_length() -> None:
    backend = ScriptedBackend()
    trace, _ = ask(backend, mode="sot", max_tokens=200)
    skeleton_req = next(r for r in backend.requests if r.tag.endswith("/skeleton"))
    assert skeleton_req.repetition_penalty == 1.0  # the penalty collapses numbered lists
    assert skeleton_req.prefill == "1."
    expand_reqs = sorted((r for r in backend.requests if "/expand/" in r.tag), key=lambda r: r.tag)
    contents = [r.messages[-1]["content"] for r in expand_reqs]
    shared = contents[0][: contents[0].index("Write only the point")]
    assert "How do I make good tea?" in shared and "4. Steep briefly" in shared
    assert all(c.startswith(shared) for c in contents)  # point-specific text comes last
    for i, req in enumerate(expand_reqs, 1):
        assert req.prefill and req.prefill.startswith(f"{i}.")
        assert "\n\n" in req.stop and "\n" not in req.stop
        assert f"\n{i + 1}." in req.stop and f"\n{i}." not in req.stop
        assert req.max_tokens == 50  # 200 tokens shared by 4 points
        assert req.repetition_penalty == 1.15


def test_normal_mode_is_one_plain_call() -> None:
    backend = ScriptedBackend()
    trace, events = ask(backend, mode="normal", max_tokens=64)
    assert [r.messages for r in backend.requests] == [[{"role": "user", "content": "How do I make good tea?"}]]
    assert backend.requests[0].repetition_penalty == 1.15 and backend.requests[0].max_tokens == 64
    assert trace.mode == "normal" and trace.answer == "A plain answer."
    assert [c.node for c in trace.calls] == ["normal"]
    assert [e.kind for e in events if not e.kind.startswith(("agent_", "run_"))][-1] == "answer_done"
    assert "answer_delta" in [e.kind for e in events]
    assert trace.router["reason"].startswith("requested")


def test_auto_routes_math_to_normal_and_records_reason() -> None:
    trace, _ = ask(ScriptedBackend(), "What is 17 * 23?", mode="auto")
    assert trace.mode == "normal"
    assert trace.router == {"mode": "normal", "reason": "cue: math"}


@pytest.mark.parametrize("skeleton", ["Tea is nice. Enjoy it.", " Just one point", ""])
def test_unusable_skeleton_falls_back_to_normal(skeleton: str) -> None:
    def reply(request: GenerationRequest) -> str:
        return skeleton if request.tag.endswith("/skeleton") else responder(request)

    trace, events = ask(ScriptedBackend(responder=reply), mode="sot")
    assert trace.mode == "normal"
    assert trace.sot["fallback"]
    assert [c.node for c in trace.calls] == ["skeleton", "normal"]
    assert trace.answer == "A plain answer."
    assert not any(e.kind == "branch_delta" for e in events)


def test_min_points_option_raises_the_fallback_bar() -> None:
    trace, _ = ask(ScriptedBackend(), mode="sot", min_points=5)
    assert trace.mode == "normal" and "need 5" in trace.sot["fallback"]


def test_point_cap_limits_branches() -> None:
    backend = ScriptedBackend()
    trace, _ = ask(backend, mode="sot", max_points=2)
    assert len(trace.points) == 2
    assert len([r for r in backend.requests if "/expand/" in r.tag]) == 2


def test_failing_branch_is_marked_and_others_return() -> None:
    trace, events = ask(ScriptedBackend(fail={2}), mode="sot")
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [(e.node, e.branch) for e in errors] == [("expand", 2)]
    assert "engine lost point 2" in errors[0].message
    lines = trace.answer.splitlines()
    assert lines[1].startswith("2. Choose good leaves: [this point failed")
    assert lines[2] == "3. Mind the water: Detail number 3 is explained here."
    assert trace.sot["failed_points"] == {2: "engine lost point 2"}
    assert trace.error and "point 2" in trace.error
    assert sorted(c.branch for c in trace.calls if c.node == "expand") == [1, 3, 4]


def test_branch_timeout_marks_the_point() -> None:
    backend = ScriptedBackend(delays={3: 60.0})
    trace, _ = ask(backend, mode="sot", branch_timeout_s=0.2)
    assert "timed out" in trace.sot["failed_points"][3]
    assert backend.abandoned == {3} and backend.active == 0  # stopped at its timeout, not waited for
    assert sorted(c.branch for c in trace.calls if c.node == "expand") == [1, 2, 4]


def test_strict_mode_raises_with_traces_kept() -> None:
    with pytest.raises(RunError) as info:
        ask(ScriptedBackend(fail={3}, delays={3: 0.05}), mode="sot", fail_on_branch_error=True)
    trace = info.value.trace
    assert trace is not None and trace.error and "point 3" in trace.error
    assert any(c.node == "skeleton" for c in trace.calls)


def test_all_branches_failing_raises() -> None:
    events: list[Event] = []
    with pytest.raises(RunError, match="all 4 point expansions failed") as info:
        asyncio.run(ask_question("How do I make good tea?", ScriptedBackend(fail={1, 2, 3, 4}), mode="sot", on_event=events.append))
    assert info.value.trace.points
    assert [e.kind for e in events].count("error") == 5  # one per branch, one for the run


def test_skeleton_failure_surfaces_as_error_event_and_exception() -> None:
    def reply(request: GenerationRequest) -> str:
        raise RuntimeError("backend down")

    events: list[Event] = []
    with pytest.raises(RunError, match="backend down") as info:
        asyncio.run(ask_question("How do I make good tea?", FakeBackend(reply), mode="sot", on_event=events.append))
    assert [e.kind for e in events][-3:] == ["error", "agent_failed", "run_finished"] and events[-1].status == "failed" and info.value.trace.error
    assert info.value.trace.status == "failed"


def test_cancellation_stops_every_branch_promptly() -> None:
    backend = ScriptedBackend(delays={i: 30.0 for i in range(1, 5)})

    async def scenario() -> None:
        task = asyncio.create_task(ask_question("How do I make good tea?", backend, mode="sot"))
        while backend.active < 4:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert backend.abandoned == {1, 2, 3, 4} and backend.active == 0  # every branch stopped, none waited for


def test_an_interrupted_run_keeps_each_points_text_once() -> None:
    """The step's mirror of the points' text (``AgentDelta``) reaches consumers but is not kept a second time."""
    from vivace.agents import run
    from vivace.assembly import runtime_for
    from vivace.config import Config

    backend = FakeBackend(lambda r: SKELETON if r.tag.endswith("/skeleton") else "alpha beta gamma delta epsilon zeta eta",
                          per_token_s=0.01)
    finished, kinds = [], []

    async def scenario() -> None:
        halfway = asyncio.Event()

        def on_event(event: Event) -> None:
            kinds.append(event.kind)
            if event.kind == "branch_delta" and "delta" in event.text:
                halfway.set()

        runtime = runtime_for(Config(), backend, save_runs=False)
        task = asyncio.create_task(run("sot", "How do I make good tea?", runtime, on_event=on_event,
                                       options={"mode": "sot", "length_plan": False}, on_finish=finished.append))
        await halfway.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    (trace,) = finished
    assert trace.status == "interrupted" and "agent_delta" in kinds  # the mirror was streamed
    blocks = trace.answer.split("\n\n")
    assert "Steep briefly" in blocks[0] and len(blocks) == 5  # the skeleton, then each of its 4 points once
    assert all(b.startswith("alpha beta gamma delta") and "zeta" not in b for b in blocks[1:])


def test_bad_input_is_refused() -> None:
    with pytest.raises(InputError):
        asyncio.run(ask_question("  ", FakeBackend()))
    with pytest.raises(InputError):
        asyncio.run(ask_question("hi", FakeBackend(), mode="fast"))


def test_pipelined_sot_gives_the_plain_answer_and_falls_back_the_same_way() -> None:
    """The fake streams no newlines, so every point goes out when the skeleton ends: the same run as plain SoT."""
    plain, _ = ask(ScriptedBackend(), mode="sot")
    piped, events = ask(ScriptedBackend(), mode="sot", pipelined=True)
    assert piped.answer == plain.answer and piped.points == plain.points
    assert [c.node for c in piped.calls].count("expand") == len(piped.points)
    assert piped.sot["stages"]["skeleton_hidden"] == 0.0  # nothing overlapped the skeleton here

    def reply(request: GenerationRequest) -> str:
        return "Tea is nice. Enjoy it." if request.tag.endswith("/skeleton") else responder(request)

    fallback, events = ask(ScriptedBackend(responder=reply), mode="sot", pipelined=True)
    assert fallback.mode == "normal" and fallback.sot["fallback"]
    assert [c.node for c in fallback.calls] == ["skeleton", "normal"] and fallback.answer == "A plain answer."
