"""`vivace bench tools`: the workload, the LangChain adapter under the real ``create_react_agent``, the figures.

The orchestration runs on the FakeBackend (replies are tool-call JSON, as the
schema-constrained engine returns them); one small run uses the real engine.
No timed assertions beyond "a tool slept at least its set latency", no
assertions on a model's words.
"""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.helpers import VIVACE, cli_env
from vivace.assembly import runtime_for
from vivace.config import Config
from vivace.errors import InputError
from vivace_bench.tools_bench import BASELINE, CONFIGS, run_bench
from vivace_bench.tools_workload import (
    CALCULATE_S, KINDS, LOOKUP_S, Expected, latency, load_tasks, load_user_tasks, make_tools, numbers, score,
)
from vivace.runtime.fake import FakeBackend
from vivace.runtime.tool_path import ToolCall, ToolScope

SCALE = 0.01  # tools sleep a hundredth of their set latency here


def _table() -> dict[tuple[str, str], float]:
    """The TSV read on its own (csv module), not through the workload's loader."""
    text = resources.files("vivace_bench").joinpath("data/tools_facts.tsv").read_text(encoding="utf-8")
    rows = csv.DictReader([l for l in text.splitlines() if not l.startswith("#")], delimiter="\t")
    return {(r["entity"], r["attribute"]): float(r["value"]) for r in rows}


def _runtime(responder: Callable[[Any], str] = lambda r: "{}", per_token_s: float = 0.0) -> Any:
    return runtime_for(Config(backend="fake"), FakeBackend(responder, per_token_s=per_token_s), save_runs=False)


def test_expected_answers_are_computed_from_the_table() -> None:
    table = _table()
    tasks = load_tasks()
    assert len(tasks) == 24 and len({t.id for t in tasks}) == 24
    assert {k: sum(t.kind == k for t in tasks) for k in KINDS} == {"parallel": 8, "chain": 8, "mix": 8}
    assert len({e for e, _ in table}) == 40
    for t in tasks:
        spec, values = t.spec, [table[(e, t.spec["attribute"])] for e in t.spec["entities"]]
        if spec["op"] in ("max", "min"):
            pick = (max if spec["op"] == "max" else min)(values)
            assert t.expected == Expected(spec["entities"][values.index(pick)], None)
        elif spec["op"] == "max_minus":
            assert t.expected.entity == spec["entities"][values.index(max(values[:-1]))]
            assert t.expected.number == abs(max(values[:-1]) - values[-1])
        elif spec["op"] == "sum":
            assert t.expected == Expected(None, sum(values))
        elif spec["op"] == "diff":
            assert t.expected == Expected(None, abs(values[0] - values[1]))
        else:
            assert t.expected == Expected(None, values[0] * spec["n"])
    assert {t.kind for t in load_tasks(("chain",))} == {"chain"}


async def _solve(runtime: Any, spec: dict[str, Any]) -> str:
    """The task answered the way a perfect agent would: with the tools' results only, through the tool path."""
    path, scope = runtime.tool_path, ToolScope(cache=False)
    got = await asyncio.gather(*(path(ToolCall("lookup", {"entity": e, "attribute": spec["attribute"]}), None, scope)
                                 for e in spec["entities"]))
    assert all(o.ok for o in got), [o.content for o in got]
    values = [o.value for o in got]

    async def calc(a: float, op: str, b: float) -> float:
        out = await path(ToolCall("calculate", {"a": a, "op": op, "b": b}), None, scope)
        assert out.ok, out.content
        return out.value

    op, names = spec["op"], spec["entities"]
    if op in ("max", "min"):
        return names[values.index((max if op == "max" else min)(values))]
    if op == "times":
        return str(await calc(values[0], "*", spec["n"]))
    if op == "diff":
        return str(await calc(values[0], "-", values[1]))
    if op == "sum":
        total = values[0]
        for v in values[1:]:
            total = await calc(total, "+", v)
        return str(total)
    best = max(values[:-1])
    return f"{names[values.index(best)]}, by {await calc(best, '-', values[-1])}"


def test_every_expected_answer_is_reachable_with_the_tools() -> None:
    runtime = _runtime()
    runtime.tools.resolve(make_tools(SCALE))
    for t in load_tasks():
        answer = asyncio.run(_solve(runtime, t.spec))
        assert score(answer, t.expected, t.candidates), (t.id, answer, t.expected)


def test_tools_sleep_their_set_latency_and_return_the_same_result() -> None:
    runtime = _runtime()
    runtime.tools.resolve(make_tools(SCALE))
    records: list[Any] = []
    scope = ToolScope(record=records.append, cache=False)
    calls = [ToolCall("lookup", {"entity": e, "attribute": a}) for e, a in list(_table())[:12]]
    calls.append(ToolCall("calculate", {"a": 7, "op": "*", "b": 6}))

    async def twice() -> tuple[list[Any], list[Any]]:
        first = await asyncio.gather(*(runtime.tool_path(c, None, scope) for c in calls))
        return first, await asyncio.gather(*(runtime.tool_path(c, None, scope) for c in calls))

    first, second = asyncio.run(twice())
    assert [o.value for o in first] == [o.value for o in second] and all(o.ok for o in first)
    assert first[-1].value == 42 and first[0].value == _table()[next(iter(_table()))]
    assert {latency(c.name, c.arguments) for c in calls} <= {*LOOKUP_S, CALCULATE_S}
    assert len({latency(c.name, c.arguments) for c in calls[:-1]}) > 1  # lookups differ from one another
    by_id = {c.id: c for c in calls}
    assert len(records) == 2 * len(calls)
    for trace in records:  # in the order they finished: matched by call id
        call = by_id[trace.call_id]
        assert trace.name == call.name and trace.seconds >= latency(call.name, call.arguments) * SCALE
    bad = asyncio.run(runtime.tool_path(ToolCall("lookup", {"entity": "Atlantis", "attribute": "population"})))
    zero = asyncio.run(runtime.tool_path(ToolCall("calculate", {"a": 1, "op": "/", "b": 0})))
    assert "no entity 'Atlantis'" in bad.content and bad.error and zero.error and "division by zero" in zero.content


def test_scoring_reads_the_named_entity_and_the_numbers() -> None:
    assert numbers("3,499,000 people, 1.2 million more, -340 and 12.5") == [3499000, 1200000, -340, 12.5]
    big = Expected("Zarnetta", None)
    names = ["Zarnetta", "Ostrevik", "Pellandor"]
    assert score("Zarnetta has the largest population.", big, names)
    assert not score("Ostrevik is smaller than Zarnetta.", big, names)  # the first one named is the choice
    assert not score("I cannot tell.", big, names)
    assert score("The difference is -3,547 m.", Expected(None, 3547), None)
    assert score("About 5.8 million people.", Expected(None, 5797000), None)  # within 0.5%
    assert not score("About 5.7 million people.", Expected(None, 5797000), None)
    both = Expected("Skarnfell", 1233)
    assert score("Skarnfell, by 1233 metres.", both, ["Skarnfell", "Grishorn"])
    assert not score("Skarnfell, by 1300 metres.", both, ["Skarnfell", "Grishorn"])


def test_user_tasks_load_and_a_bad_file_is_one_input_error(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"task": "Population of Zarnetta?", "answer": 3499000}\n\n'
                    '{"task": "Tallest of Kaldros and Grishorn?", "answer": "Grishorn", "kind": "parallel"}\n'
                    '{"task": "Twice 21?", "answer": "42"}\n')
    tasks = load_user_tasks(good)
    assert [t.expected for t in tasks] == [Expected(None, 3499000.0), Expected("Grishorn", None),
                                           Expected(None, 42.0)]
    assert [t.kind for t in tasks] == ["custom", "parallel", "custom"]
    assert [t.id for t in load_user_tasks(good, ["parallel"])] == ["t3"]
    too_long = '{"task": "x", "answer": ' + "9" * 5000 + "}\n"  # json.loads: a ValueError, not a JSONDecodeError
    for text, why in (("not json\n", "line 1: not JSON"), (too_long, "line 1: not JSON .*digits"), ('{"answer": 1}\n', '"task"'),
                      ('{"task": "x", "answer": ""}\n', '"answer"'), ("", "no tasks")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text)
        with pytest.raises(InputError, match=why):
            load_user_tasks(bad)
    with pytest.raises(InputError, match="cannot read"):
        load_user_tasks(tmp_path / "missing.jsonl")


def _replies(request: Any) -> str:
    """Tool-call JSON the way the engine decodes it: a plan with one call that fails (so the agent plans again,
    and the same plan comes back), a joiner's answer, a ReAct turn, a final answer."""
    system, last = request.messages[0]["content"], request.messages[-1]["content"]
    if system.startswith("You plan tool calls"):
        return json.dumps({"calls": [{"tool": "lookup", "args": {"entity": "Zarnetta", "attribute": "population"}},
                                     {"tool": "lookup", "args": {"entity": "Ostrevik", "attribute": "population"}},
                                     {"tool": "calculate", "args": {"a": "$1", "op": "-", "b": "$2"}},
                                     {"tool": "lookup", "args": {"entity": "Atlantis", "attribute": "population"}}]})
    if system.startswith("You answer a task"):
        return json.dumps({"answer": "Zarnetta, by 3421000."})
    if last.startswith("Tool result"):
        return json.dumps({"content": f"Zarnetta: {last.split(': ', 1)[1]}"})
    return json.dumps({"tool_calls": [{"name": "lookup",
                                       "arguments": {"entity": "Zarnetta", "attribute": "population"}}]})


def _repeats(records: list[dict[str, Any]]) -> int:
    """Calls in one run that repeat an earlier successful call of that run: what the cache can serve."""
    done, n = set(), 0
    for t in sorted(records, key=lambda t: t["started_at"]):
        key = json.dumps([t["name"], t["arguments"]], sort_keys=True)
        n += key in done
        if t["error"] is None:
            done.add(key)
    return n


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_the_langchain_adapter_drives_langgraphs_react_agent_with_the_tool_run() -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langgraph.prebuilt import create_react_agent

    from vivace_bench.lc_model import VivaceChatModel, lc_tools
    from vivace.runtime.call import Scope, enter_scope, leave_scope

    backend = FakeBackend(_replies)
    runtime = runtime_for(Config(backend="fake"), backend, save_runs=False)
    tools = runtime.tools.resolve(make_tools(SCALE))
    graph = create_react_agent(VivaceChatModel(runtime=runtime, max_tokens=64), lc_tools(runtime, tools))
    calls: list[Any] = []
    ran: list[Any] = []

    async def go() -> dict[str, Any]:
        token = enter_scope(Scope(run_id="t", compression="off", record=calls.append, record_tool=ran.append))
        try:
            return await graph.ainvoke({"messages": [HumanMessage("How many people live in Zarnetta?")]})
        finally:
            leave_scope(token)

    state = asyncio.run(go())
    population = int(_table()[("Zarnetta", "population")])
    kinds = [type(m).__name__ for m in state["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    call_msg, tool_msg, final = state["messages"][1:]
    assert call_msg.tool_calls[0]["name"] == "lookup" and isinstance(tool_msg, ToolMessage)
    assert tool_msg.tool_call_id == call_msg.tool_calls[0]["id"] and tool_msg.content == str(population)
    assert final.content == f"Zarnetta: {population}" and final.usage_metadata["output_tokens"] > 0
    assert [t.name for t in ran] == ["lookup"] and ran[0].agent == "react-langgraph" and not ran[0].cache_hit
    assert len(calls) == 2 and all(c.extra["output"]["valid"] for c in calls)
    second = backend.requests[1]  # the tool turn went back as vivace's plain tool turns, with its call
    assert second.output is not None and second.temperature == 0.0
    assert any(m["content"] == f"Tool result (lookup): {population}" for m in second.messages)
    assert any('"tool_calls"' in m["content"] for m in second.messages if m["role"] == "assistant")


def test_every_configuration_runs_and_its_figures_add_up_from_its_traces() -> None:
    runtime = _runtime(_replies, per_token_s=0.004)
    tasks = [t for t in load_tasks() if t.id in ("p1", "c2")]
    report = asyncio.run(run_bench(runtime, list(CONFIGS), tasks, 256, scale=SCALE, warmup=False))
    rows = {r["config"]: r for r in report["rows"]}
    assert list(rows) == list(CONFIGS) and rows[BASELINE]["speedup_median"] == 1.0
    assert report["turn_tokens"] == 256 and report["tool_latency_s"]["scale"] == SCALE
    for name, r in rows.items():
        assert r["tasks"] == 2 and r["failures"] == 0 and r["schema_valid_rate"] == 1.0
        assert r["accuracy"]["n"] == 2 and r["speedup_median"] > 0 and set(r["by_kind"]) == {"parallel", "chain"}
        for x in r["results"]:
            assert x["calls"] == len(x["call_records"]) >= 2
            assert x["tool_calls"] == len(x["tool_records"]) >= 1
            assert x["tool_s"] == pytest.approx(sum(t["seconds"] for t in x["tool_records"]), abs=1e-3)
            assert x["output_tokens"] == sum(c["output_tokens"] for c in x["call_records"])
            assert x["cache_hits"] == sum(t["cache_hit"] for t in x["tool_records"])
            split = x["model_wall_s"] + x["tool_wall_s"] - x["overlap_s"] + x["other_s"]
            assert split == pytest.approx(x["latency_s"], abs=0.01) and x["model_wall_s"] <= x["model_s"] + 1e-3
    plans = [rows[c] for c in ("plan", "plan+stream", "plan+cache", "vivace")]
    assert all(r["modes"] == {"plan": 2} and r["replans"] >= 2 and r["per_task"]["tool_errors"] >= 1 for r in plans)
    # The second plan repeats the first: with the cache, every repeat of a successful call in the run is a hit
    # (the cache is cleared before each run, so nothing comes from another task); without it, none is.
    for name in ("plan+cache", "vivace"):
        assert rows[name]["cache_hits"] > 0
        assert all(x["cache_hits"] == _repeats(x["tool_records"]) for x in rows[name]["results"])
    assert rows["plan"]["cache_hits"] == rows["plan+stream"]["cache_hits"] == rows[BASELINE]["cache_hits"] == 0
    assert all(_repeats(x["tool_records"]) > 0 for x in rows["plan"]["results"])  # the same calls, run again
    # Tools run during the plan's decoding only when dispatched from the stream.
    assert all(x["overlap_s"] == 0 for c in ("plan", "plan+cache", "react", BASELINE) for x in rows[c]["results"])
    assert all(x["overlap_s"] > 0 for x in rows["plan+stream"]["results"])
    assert rows["react"]["modes"] == {"react": 2} and rows[BASELINE]["per_task"]["calls"] == 2


def test_the_report_section_shows_every_configuration(tmp_path: Path) -> None:
    from vivace_bench.report_sections import tables_for
    from vivace_bench.tools_bench import plot

    report = asyncio.run(run_bench(_runtime(_replies), [BASELINE, "vivace"], load_tasks(("parallel",))[:1], 128,
                                   scale=SCALE, warmup=False))
    tables = tables_for("tools", report)
    assert [len(t.rows) for t in tables] == [2, 2, 2]
    assert [r[0] for r in tables[0].rows] == [BASELINE, "vivace"] and tables[0].rows[0][3] == "1.00"
    assert plot(report, tmp_path).exists()


def test_a_bad_tasks_file_is_one_line_and_exit_2(tmp_path: Path, vivace_home: Path) -> None:
    bad = tmp_path / "tasks.jsonl"
    bad.write_text('{"task": "Population of Zarnetta?"}\n')
    proc = subprocess.run([VIVACE, "bench", "tools", "--tasks", str(bad), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=cli_env(vivace_home), timeout=120)
    assert proc.returncode == 2 and "line 1" in proc.stderr and '"answer"' in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before any engine started or anything was written


def test_the_cli_lists_the_benchs_configurations() -> None:
    from vivace_bench.commands.bench_tools import CONFIG_NAMES, KIND_NAMES

    assert CONFIG_NAMES == tuple(CONFIGS) and KIND_NAMES == KINDS


@pytest.mark.engine
def test_a_small_real_run_reads_its_figures_off_the_traces(engine: Any, run: Callable[..., Any]) -> None:
    runtime = runtime_for(Config(), engine, save_runs=False)
    tasks = [t for t in load_tasks() if t.id in ("p1", "c6")]
    report = run(run_bench(runtime, [BASELINE, "vivace"], tasks, 512, scale=0.2, warmup=False), timeout=1200)
    rows = {r["config"]: r for r in report["rows"]}
    assert list(rows) == [BASELINE, "vivace"] and report["turn_tokens"] <= 512
    for r in rows.values():
        assert r["tasks"] == 2 and 0 <= r["accuracy"]["rate"] <= 1 and r["p50_s"] > 0
        assert r["schema_valid_rate"] is not None and 0 <= r["schema_valid_rate"] <= 1
        for x in r["results"]:
            assert x["calls"] == len(x["call_records"]) >= 1 and x["latency_s"] > 0
            assert x["tool_s"] == pytest.approx(sum(t["seconds"] for t in x["tool_records"]), abs=1e-3)
            assert x["prompt_tokens"] == sum(c["prompt_tokens"] for c in x["call_records"]) > 0
            assert x["schema_valid"] == sum(bool(c["valid"]) for c in x["call_records"])
            split = x["model_wall_s"] + x["tool_wall_s"] - x["overlap_s"] + x["other_s"]
            assert split == pytest.approx(x["latency_s"], abs=0.05)
    assert rows["vivace"]["modes"].keys() <= {"plan", "react"}
    assert rows[BASELINE]["speedup_median"] == 1.0 and rows["vivace"]["speedup_median"] > 0
