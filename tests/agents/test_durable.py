"""Durable runs on FakeBackend: checkpoints per step, resume without re-running, approvals, bad input.

The store is the real SQLite saver in a temporary home; the fake stands in for
the model only (orchestration logic). The engine and PostgreSQL versions are
in ``test_durable_engine.py`` and ``tests/runtime/test_checkpoints_postgres.py``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.agents.fakes import CHAIN, failing_writer, gated, height, sot_responder, steps_of, tools_responder
from tests.agents.fakes import research_responder as responder
from vivace.agents.builtin import research_pipeline
from vivace.agents.driver import run
from vivace.agents.resume import resume
from vivace.assembly import runtime_for
from vivace.config import Config
from vivace.errors import BusyError, InputError, RunError
from vivace.runtime.backend import GenerationRequest
from vivace.runtime.fake import FakeBackend


def runtime(home: Path, backend: Any, **config: Any) -> Any:
    return runtime_for(Config(backend="fake", max_tokens=64, home=home, **config), backend)


@pytest.mark.parametrize("execution", ["dataflow", "supersteps"])
def test_a_failed_pipeline_resumes_without_running_its_finished_steps(tmp_path: Path, execution: str) -> None:
    fail = {"write": True}
    backend = FakeBackend(failing_writer(fail))

    async def go() -> tuple[Any, Any, Any]:
        rt = runtime(tmp_path, backend, execution=execution)
        try:
            with pytest.raises(RunError) as err:
                await run(research_pipeline(), "How do bees fly?", rt)
            first = err.value.trace
            fail["write"] = False
            before = len(backend.requests)
            second = await resume(first.run_id, rt, target=research_pipeline())
            return first, second, backend.requests[before:]
        finally:
            await rt.aclose()

    first, second, new_requests = asyncio.run(go())
    assert first.status == "failed"
    assert steps_of(first.calls) == ["plan", "research"]
    assert second.status == "done" and second.answer == "A draft answer."
    # only the unfinished steps called the model: plan and the three research branches came from the checkpoint
    assert [r.tag.split("/")[1] for r in new_requests] == ["write", "review"]
    assert steps_of(second.calls) == ["review", "write"]
    assert second.meta["resumed_from"] == first.run_id
    assert sorted(second.meta["resumed_steps"]) == ["plan.0", "research.0.1", "research.0.2", "research.0.3"]
    resumed = [s for s in second.steps if s["extra"].get("resumed")]
    assert len(resumed) == 4 and all(s["calls"] == 0 for s in resumed)


def test_the_store_lists_runs_and_refuses_what_cannot_be_resumed(tmp_path: Path) -> None:
    backend = FakeBackend(responder())

    async def go() -> None:
        rt = runtime(tmp_path, backend)
        try:
            done = await run(research_pipeline(), "Why is the sky blue?", rt)
            store = rt.checkpoints()
            listed = store.runs()
            assert listed[0]["run_id"] == done.run_id and listed[0]["status"] == "done"
            assert listed[0]["agent"] == "research"
            with pytest.raises(InputError, match="finished"):
                await resume(done.run_id, rt, target=research_pipeline())
            with pytest.raises(InputError, match="no run"):
                await resume("no-such-run", rt)
        finally:
            await rt.aclose()

    asyncio.run(go())


def test_a_changed_pipeline_is_not_resumed(tmp_path: Path) -> None:
    fail = {"write": True}

    async def go() -> None:
        rt = runtime(tmp_path, FakeBackend(failing_writer(fail)))
        try:
            with pytest.raises(RunError) as err:
                await run(research_pipeline(), "How do tides work?", rt)
            changed = research_pipeline()
            changed.steps["research"].max_branches = 2
            with pytest.raises(InputError, match="changed since run"):
                await resume(err.value.trace.run_id, rt, target=changed)
            assert rt.checkpoints().load_now(err.value.trace.run_id).status == "failed"  # nothing overwritten
        finally:
            await rt.aclose()

    asyncio.run(go())


def test_two_resumes_of_one_run_one_wins(tmp_path: Path) -> None:
    fail = {"write": True}
    backend = FakeBackend(failing_writer(fail), latency_s=0.2)

    async def go() -> list[Any]:
        rt = runtime(tmp_path, backend)
        try:
            with pytest.raises(RunError) as err:
                await run(research_pipeline(), "What is rust?", rt)
            fail["write"] = False
            run_id = err.value.trace.run_id
            return await asyncio.gather(*(resume(run_id, rt, target=research_pipeline()) for _ in range(2)),
                                        return_exceptions=True)
        finally:
            await rt.aclose()

    results = asyncio.run(go())
    assert sum(isinstance(r, BusyError) for r in results) == 1
    assert sum(getattr(r, "status", None) == "done" for r in results) == 1


@pytest.mark.parametrize("execution", ["dataflow", "supersteps"])
def test_a_step_that_needs_approval_pauses_the_run_until_it_is_given(tmp_path: Path, execution: str) -> None:
    backend = FakeBackend(responder())

    async def go() -> tuple[Any, Any, Any, int]:
        rt = runtime(tmp_path, backend, execution=execution)
        try:
            paused = await run(gated(), "How do bees fly?", rt)
            stored = rt.checkpoints().load_now(paused.run_id)
            n = len(backend.requests)
            finished = await resume(paused.run_id, rt, target=gated(), approve="all")
            return paused, stored, finished, len(backend.requests) - n
        finally:
            await rt.aclose()

    paused, stored, finished, new_calls = asyncio.run(go())
    assert paused.status == "paused"
    assert paused.meta["pending_approval"]["step"] == "write"
    assert not any(c.node == "write" for c in paused.calls)
    assert stored.status == "paused"
    assert finished.status == "done" and finished.answer == "A draft answer."
    assert new_calls == 1  # the writer alone


def test_a_denied_step_fails_the_run_and_an_unchecked_run_cannot_pause(tmp_path: Path) -> None:
    async def go() -> None:
        rt = runtime(tmp_path, FakeBackend(responder()))
        try:
            with pytest.raises(RunError, match="not approved"):
                await run(gated(), "How do bees fly?", rt, approve="none")
            asked: list[str] = []
            done = await run(gated(), "How do bees fly?", rt, approve=lambda a: asked.append(a.what) or True)
            assert done.status == "done" and asked == ["run step 'write' (agent writer)"]
        finally:
            await rt.aclose()
        fake = FakeBackend(responder())
        off = runtime_for(Config(backend="fake", max_tokens=64, home=tmp_path, checkpoints=False), fake)
        with pytest.raises(InputError, match="not checkpointed"):
            await run(gated(), "How do bees fly?", off)
        assert fake.requests == []  # refused before any model call

    asyncio.run(go())


def test_keep_runs_prunes_the_oldest_runs(tmp_path: Path) -> None:
    async def go() -> tuple[list[str], list[dict[str, Any]]]:
        rt = runtime(tmp_path, FakeBackend(responder()), keep_runs=3)
        ids = []
        try:
            for i in range(5):
                ids.append((await run("writer", f"Say hello number {i}", rt)).run_id)
            for name in ("a", "b", "c", "d", "a"):  # conversation a is the oldest, and active again
                ids.append((await run("writer", "Hello again", rt, thread=name)).run_id)
            rt.checkpoints().prune()
            kept = {name: len(await rt.checkpoints().turns(name)) for name in "abcd"}
            assert kept == {"a": 2, "b": 0, "c": 1, "d": 1}  # the least recently active conversation went
            return ids, rt.checkpoints().runs()
        finally:
            await rt.aclose()

    ids, listed = asyncio.run(go())
    assert [r["run_id"] for r in listed] == ids[::-1][:3]  # the newest three of ten
    lines = (tmp_path / "runs" / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 10 and json.loads(lines[0])["checkpoint"]["steps_saved"] == 1


def test_a_thread_carries_earlier_turns_into_every_call_within_the_budget(tmp_path: Path) -> None:
    backend = FakeBackend(lambda request: f"answer {len(request.messages)}")

    async def go() -> list[Any]:
        rt = runtime(tmp_path, backend)
        try:
            out = [await run("writer", "My name is Ada.", rt, thread="chat-1"),
                   await run("writer", "What is my name?", rt, thread="chat-1"),
                   await run("writer", "Unrelated question.", rt, thread="other"),
                   await run("writer", "And again?", rt, thread="chat-1", history_budget_tokens=12)]
            return out
        finally:
            await rt.aclose()

    first, second, other, tight = asyncio.run(go())
    sent = [r.messages for r in backend.requests]
    assert "My name is Ada." not in json.dumps(sent[0][:-1])
    # the second turn's call carries the first turn as a user and an assistant message, before its own
    assert {"role": "user", "content": "My name is Ada."} in sent[1]
    assert {"role": "assistant", "content": first.answer} in sent[1]
    assert second.thread == {"id": "chat-1", "turns": 1, "dropped": 0}
    assert other.thread["turns"] == 0 and "Ada" not in json.dumps(sent[2])
    # a budget that fits one turn keeps the newest one only
    assert tight.thread == {"id": "chat-1", "turns": 1, "dropped": 1}
    assert "My name is Ada." not in json.dumps(sent[3]) and "What is my name?" in json.dumps(sent[3])


def test_a_bad_thread_id_is_input_and_a_thread_needs_checkpoints(tmp_path: Path) -> None:
    async def go() -> None:
        rt = runtime(tmp_path, FakeBackend())
        off = runtime(tmp_path, FakeBackend(), checkpoints=False)
        try:
            with pytest.raises(InputError, match="thread id"):
                await run("writer", "hi", rt, thread=" ")
            with pytest.raises(InputError, match="needs checkpoints"):
                await run("writer", "hi", off, thread="t")
        finally:
            await rt.aclose()

    asyncio.run(go())


def test_a_sot_run_resumes_from_its_skeleton_and_finished_points(tmp_path: Path) -> None:
    """Interrupted once point 1 is expanded and point 2 is still decoding: the resume decodes point 2 alone."""
    from vivace.agents.driver import ask

    def respond(request: GenerationRequest) -> str:
        if request.tag.endswith("/expand/2"):
            return " ".join(["slowly"] * 400)
        return sot_responder(request)

    backend = FakeBackend(respond, per_token_s=0.005)

    async def go() -> tuple[Any, Any, list[str]]:
        rt = runtime(tmp_path, backend)
        try:
            task: asyncio.Task[Any] | None = None

            def on_event(event: Any) -> None:
                if event.kind == "branch_done" and event.index == 1 and task is not None:
                    task.cancel()  # as Ctrl-C does

            task = asyncio.ensure_future(ask("Explain how a bicycle works.", rt, mode="sot", on_event=on_event,
                                             max_tokens=512, point_max_tokens=512))
            with pytest.raises(asyncio.CancelledError):
                await task
            first_id = rt.checkpoints().runs(1)[0]["run_id"]
            n = len(backend.requests)
            second = await resume(first_id, rt)
            return rt.checkpoints().load_now(first_id), second, [r.tag.split("/", 1)[1] for r in backend.requests[n:]]
        finally:
            await rt.aclose()

    first, second, tags = asyncio.run(go())
    assert first.status == "resumed" and first.meta["resumed_by"] == second.run_id
    assert second.status == "done" and second.mode == "sot"
    # the skeleton and point 1 came from the checkpoint; only point 2 was decoded again
    assert tags == ["expand/2"]
    assert second.meta["resumed_steps"][0] == "sot.0/skeleton"
    assert any(k.startswith("sot.0/point.1.") for k in second.meta["resumed_steps"])


def test_a_tool_that_needs_approval_pauses_the_run_and_a_denial_is_the_models_answer(tmp_path: Path) -> None:
    from vivace import tool

    sent: list[str] = []

    @tool(requires_approval=True)
    async def subtract(a: float, b: float) -> float:
        """a minus b (pretend it spends money)."""
        sent.append(f"{a}-{b}")
        return a - b

    async def go() -> tuple[Any, Any, Any]:
        rt = runtime(tmp_path, FakeBackend(tools_responder(CHAIN)))
        try:
            kw: dict[str, Any] = {"tools": [height, subtract], "options": {"tool_mode": "plan"}}
            paused = await run("tools", "How much taller is Ambrosa than Tessik?", rt, **kw)
            assert sent == []  # nothing was sent before the approval
            finished = await resume(paused.run_id, rt, approve="all", tools=[height, subtract])
            denied = await run("tools", "How much taller is Ambrosa than Tessik?", rt, approve="none", **kw)
            return paused, finished, denied
        finally:
            await rt.aclose()

    paused, finished, denied = asyncio.run(go())
    assert paused.status == "paused"
    assert paused.meta["pending_approval"]["kind"] == "tool"
    assert paused.meta["pending_approval"]["what"].startswith("call subtract(")
    assert finished.status == "done" and sent == ["5120.0-2970.0"]
    assert denied.status == "done" and sent == ["5120.0-2970.0"]  # the denied call never ran
    assert {(t.name, t.error) for t in denied.tools if t.error} == {("subtract", "not approved")}  # (and its replan)


def test_a_registered_agent_or_a_pipeline_file_resumes_without_being_named_again(tmp_path: Path) -> None:
    from vivace.agents.driver import resolve

    fail = {"write": True}
    toml = tmp_path / "mine.toml"
    toml.write_text('name = "mine"\nedges = [["plan", "research"], ["research", "write"]]\n'
                    '[steps]\nplan = "planner"\nresearch = { agent = "researcher", fan_out = true }\n'
                    'write = "writer"\n')

    async def go() -> list[Any]:
        rt = runtime(tmp_path / "home", FakeBackend(failing_writer(fail)))
        out = []
        try:
            for target in (resolve("research"), resolve(str(toml))):  # as `vivace run` hands them over
                fail["write"] = True
                with pytest.raises(RunError) as err:
                    await run(target, "How do bees fly?", rt)
                fail["write"] = False
                out.append(await resume(err.value.trace.run_id, rt))
        finally:
            await rt.aclose()
        return out

    research, mine = asyncio.run(go())
    assert research.status == mine.status == "done"
    assert research.agent == "research" and mine.agent == "mine"
    assert "plan.0" in mine.meta["resumed_steps"]
