"""The ``tools`` agent's orchestration (fake backend: what it runs, in which order, and what the record says).

The engine test (``test_tools_engine.py``) runs it on the embedded model under the grammar.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.agents.fakes import CHAIN, LOG, height, subtract, tools_responder as _responder
from vivace import Config, FakeBackend, run, runtime_for
from vivace.errors import InputError, RunError


def _runtime(responder, per_token_s: float = 0.0):
    LOG.clear()
    backend = FakeBackend(responder, per_token_s=per_token_s)
    return runtime_for(Config(backend="fake"), backend, save_runs=False), backend


def test_a_plan_runs_independent_calls_at_once_and_fills_references() -> None:
    runtime, _ = _runtime(_responder(CHAIN))
    trace = asyncio.run(run("tools", "How much taller is Ambrosa than Tessik?", runtime, tools=[height, subtract],
                            options={"tool_mode": "plan"}))
    first, second, diff = trace.tools
    assert (first.name, second.name, diff.name) == ("height", "height", "subtract")
    assert second.started_at < first.ended_at  # the two look-ups overlapped
    assert diff.started_at >= max(first.ended_at, second.ended_at)  # the dependent call waited for both
    assert diff.arguments == {"a": 5120, "b": 2970} and diff.error is None
    record = trace.meta["tools_agent"]
    assert record["mode"] == "plan" and record["plans"][0]["calls"][2]["deps"] == [1, 2]
    assert trace.answer == "Ambrosa is 2150 m taller."
    assert [c.extra["stage"] for c in trace.calls] == ["plan", "join"]
    assert trace.critical_path_s >= diff.ended_at - first.started_at  # tools are on the critical path


def test_calls_start_while_the_plan_is_still_streaming_and_only_with_streaming_dispatch() -> None:
    for streaming in (True, False):
        runtime, _ = _runtime(_responder(CHAIN), per_token_s=0.01)
        trace = asyncio.run(run("tools", "Ambrosa minus Tessik?", runtime, tools=[height, subtract],
                                options={"tool_mode": "plan", "stream_dispatch": streaming}))
        plan_call = next(c for c in trace.calls if c.extra["stage"] == "plan")
        first_tool = min(t.started_at for t in trace.tools)
        assert (first_tool < plan_call.ended_at) is streaming


def test_a_plan_that_repeats_itself_is_cut_and_the_cut_call_is_recorded() -> None:
    looping = {"calls": [{"tool": "height", "args": {"mountain": "Zorvik"}}] * 6}
    runtime, backend = _runtime(_responder(looping), per_token_s=0.002)
    trace = asyncio.run(run("tools", "How tall is Zorvik?", runtime, tools=[height], options={"tool_mode": "plan"}))
    plan_call = next(c for c in trace.calls if c.extra["stage"] == "plan")
    assert plan_call.finish_reason == "cut" and plan_call.output_tokens > 0
    assert len(trace.tools) == 1 and trace.meta["tools_agent"]["plans"][0]["cut"] == "entry 2 repeats an earlier one"
    full = len(json.dumps(looping).split())
    assert plan_call.output_tokens < full  # the rest of the loop was never generated


def test_failed_calls_get_one_replan_and_a_failed_dependency_is_not_run() -> None:
    bad = {"calls": [{"tool": "height", "args": {"mountain": "Nowhere"}},
                     {"tool": "subtract", "args": {"a": "$1", "b": 1}}]}
    good = {"calls": [{"tool": "height", "args": {"mountain": "Zorvik"}}]}
    runtime, _ = _runtime(_responder([bad, good]))
    trace = asyncio.run(run("tools", "How tall is Nowhere?", runtime, tools=[height, subtract],
                            options={"tool_mode": "plan"}))
    record = trace.meta["tools_agent"]
    assert record["replans"] == 1 and len(record["plans"]) == 2
    assert "KeyError" in record["plans"][0]["calls"][0]["error"]
    assert record["plans"][0]["calls"][1]["error"] == "dependency failed"
    assert [t.name for t in trace.tools] == ["height", "height"]  # subtract never ran on a failed input
    assert trace.status == "done"


def test_react_runs_one_call_per_turn_and_stops_when_a_call_repeats() -> None:
    call = json.dumps({"tool_calls": [{"name": "height", "arguments": {"mountain": "Zorvik"}}]})
    runtime, _ = _runtime(_responder({"calls": []}, react=[call, call, call]))
    trace = asyncio.run(run("tools", "How tall is Zorvik?", runtime, tools=[height], options={"tool_mode": "react"}))
    record = trace.meta["tools_agent"]
    assert record["mode"] == "react" and record["stopped"] == "a call repeated an earlier one"
    assert len(trace.tools) == 1 and [c.extra["stage"] for c in trace.calls] == ["react", "react", "answer"]


def test_auto_falls_back_to_react_when_the_plan_is_empty_and_says_why() -> None:
    content = json.dumps({"content": "It is 4210 m."})
    runtime, _ = _runtime(_responder({"calls": []}, react=[content]))
    trace = asyncio.run(run("tools", "How tall is Zorvik?", runtime, tools=[height]))
    assert trace.meta["tools_agent"]["mode"] == "react" and trace.meta["tools_agent"]["why"] == "the plan held no call"
    assert trace.answer == "It is 4210 m."


def test_the_pure_tool_cache_is_shared_across_runs_unless_the_run_turns_it_off() -> None:
    plan = {"calls": [{"tool": "height", "args": {"mountain": "Zorvik"}}]}
    runtime, _ = _runtime(_responder(plan))
    for cache, hits in ((True, [False, True]), (False, [False, False])):
        runtime.tool_path.clear_cache()
        seen = [asyncio.run(run("tools", "Zorvik?", runtime, tools=[height],
                                options={"tool_mode": "plan", "tool_cache": cache})).tools[0].cache_hit
                for _ in range(2)]
        assert seen == hits


def test_no_tools_and_unknown_tools_are_input_errors_before_any_call(tmp_path: Path) -> None:
    runtime, backend = _runtime(_responder({"calls": []}))
    with pytest.raises(RunError, match="has no tools") as info:
        asyncio.run(run("tools", "Zorvik?", runtime))
    assert info.value.exit_code == 2
    with pytest.raises(InputError, match="unknown tool 'nope'"):
        asyncio.run(run("tools", "Zorvik?", runtime, tools=["nope"]))
    pipe = tmp_path / "p.toml"
    pipe.write_text('name = "p"\n[steps]\nact = { agent = "tools", tools = ["height", "missing"] }\n')
    runtime.tools.add(height)
    with pytest.raises(InputError, match="step 'act': unknown tool 'missing'"):
        asyncio.run(run(str(pipe), "Zorvik?", runtime))
    assert backend.requests == []


def test_a_pipeline_step_gets_only_the_tools_it_names(tmp_path: Path) -> None:
    plan = {"calls": [{"tool": "height", "args": {"mountain": "Zorvik"}}]}
    runtime, backend = _runtime(_responder(plan))
    runtime.tools.add(height)
    runtime.tools.add(subtract)
    pipe = tmp_path / "p.toml"
    pipe.write_text('name = "p"\n[steps]\nact = { agent = "tools", tools = ["height"] }\n')
    trace = asyncio.run(run(str(pipe), "How tall is Zorvik?", runtime, options={"tool_mode": "plan"}))
    assert trace.meta["tools_agent"]["tools"] == ["height"]
    assert "subtract" not in backend.requests[0].messages[0]["content"]
    assert trace.tools[0].node == "act" and trace.steps[0]["tool_calls"] == 1
