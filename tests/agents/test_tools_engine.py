"""Tools and structured output on the real engine: the embedded model decodes under vLLM's grammar.

Properties of the replies and the records only; never the model's words or the wall clock.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Literal

import jsonschema
import pytest
from pydantic import BaseModel

from vivace import tool
from vivace.agents.driver import run as run_target
from vivace.agents.driver import run_record
from vivace.agents.tools_agent import plan_schema
from vivace.assembly import runtime_for
from vivace.config import Config
from vivace.runtime.call import Call

pytestmark = pytest.mark.engine

FACTS = {"zorvik": 4210, "quellan": 3880, "ambrosa": 5120, "tessik": 2970}


@tool(pure=True)
def height(mountain: str) -> int:
    """Height of a mountain in metres."""
    return FACTS[mountain.strip().lower()]


@tool(pure=True)
def subtract(a: float, b: float) -> float:
    """a minus b."""
    return a - b


class Verdict(BaseModel):
    verdict: Literal["approve", "revise"]
    reason: str


QUESTIONS = ["How tall is Zorvik?", "Which is taller, Quellan or Tessik?",
             "How much taller is Ambrosa than Tessik?", "Add the heights of Zorvik and Quellan.",
             "Which of Zorvik, Quellan, Ambrosa and Tessik is the tallest?", "Is Tessik under 3000 m?"]


def test_every_tool_call_is_schema_valid_under_the_grammar(engine: Any, run: Callable[..., Any]) -> None:
    runtime = runtime_for(Config(max_tokens=160), engine, save_runs=False)
    schemas = {t.name: t.parameters for t in (height, subtract)}

    async def ask(question: str, choice: str) -> tuple[str, Any, Any]:
        result, trace = await runtime.call(Call([{"role": "user", "content": question}], tools=[height, subtract],
                                                tool_choice=choice, max_tokens=128))
        return choice, result, trace

    async def ask_all() -> list[Any]:  # at once: the engine batches them
        return list(await asyncio.gather(*(ask(q, c) for q in QUESTIONS for c in ("required", "auto"))))

    replies = run(ask_all())
    calls = [c for _, r, _ in replies for c in r.tool_calls]
    assert all(t.extra["output"]["valid"] for _, _, t in replies)
    assert all(r.tool_calls for choice, r, _ in replies if choice == "required")
    assert calls
    for call in calls:  # 100% schema-valid: a known tool, arguments that its own schema accepts
        jsonschema.validate(call.arguments, schemas[call.name])


def test_structured_output_choices_regex_and_a_model(engine: Any, run: Callable[..., Any]) -> None:
    runtime = runtime_for(Config(), engine, save_runs=False)
    ask = [{"role": "user", "content": "Is the sky green? Judge it."}]

    async def go() -> list[Any]:
        return [await runtime.call(Call(ask, output=Verdict, max_tokens=120)),
                await runtime.call(Call(ask, output=["yes", "no"], max_tokens=8)),
                await runtime.call(Call([{"role": "user", "content": "Pick a year."}], output=r"(19|20)\d\d",
                                        max_tokens=8))]

    (verdict, vt), (choice, ct), (year, yt) = run(go())
    assert isinstance(verdict.parsed, Verdict) and vt.extra["output"]["kind"] == "json"
    assert len(verdict.parsed.reason) <= 400  # every string is bounded
    assert choice.parsed in ("yes", "no") and ct.extra["output"] == {"kind": "choice", "valid": True, "attempt": 1,
                                                                     "tool_calls": []}
    assert year.parsed.isdigit() and len(year.parsed) == 4 and yt.extra["output"]["valid"]


def test_the_tools_agent_plans_runs_and_records_on_the_engine(engine: Any, run: Callable[..., Any]) -> None:
    runtime = runtime_for(Config(max_tokens=160), engine, save_runs=False)
    trace = run(run_target("tools", "Which of Zorvik, Quellan, Ambrosa and Tessik is the tallest?", runtime,
                           tools=[height, subtract], options={"tool_mode": "plan"}))
    record = run_record(trace)
    assert record["status"] == "done" and record["answer"].strip()
    plan_calls = [c for c in trace.calls if c.extra.get("stage") == "plan"]
    assert plan_calls and record["meta"]["tools_agent"]["mode"] == "plan"
    planned = [c for p in record["meta"]["tools_agent"]["plans"] for c in p["calls"]]
    for entry in planned:  # what was dispatched matches the plan's schema: a known tool with its arguments
        jsonschema.validate({"calls": [{"tool": entry["tool"], "args": entry["args"]}]},
                            plan_schema([height, subtract]))
    assert len(record["tools"]) == len([e for e in planned if e["error"] != "dependency failed"])
    assert all(t["node"] == "tools" and t["seconds"] >= 0 for t in record["tools"])
    json.dumps(record)  # the record, tool calls included, is JSON as runs.jsonl writes it
