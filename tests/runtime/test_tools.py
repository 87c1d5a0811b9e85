"""Tools, the tool path, structured output and tool replies on the call path (orchestration logic: fake backend).

The engine's grammar-constrained decoding is tested in ``test_structured_engine.py``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import pytest
from pydantic import BaseModel

from vivace import Config, FakeBackend, runtime_for, tool
from vivace.errors import InputError, OutputError
from vivace.runtime.call import Call
from vivace.runtime.json_stream import ListEntries
from vivace.runtime.output import OutputInvalid, output_spec
from vivace.runtime.tool_calls import ToolChoice, plain_messages, reply_spec, specs
from vivace.runtime.tool_path import ToolCall, ToolPath, ToolScope
from vivace.runtime.tools import ToolBox, make_tool


@tool(pure=True)
def height(name: str, unit: Literal["m", "ft"] = "m") -> float:
    """Height of a mountain.

    Args:
        name: the mountain's name
        unit: metres or feet
    """
    return {"alpha": 4000.0, "beta": 5000.0}[name.lower()] * (1 if unit == "m" else 3.28)


def test_schema_and_description_come_from_hints_and_docstring() -> None:
    assert height.name == "height" and height.description == "Height of a mountain."
    props = height.parameters["properties"]
    assert props["name"]["type"] == "string" and props["name"]["description"] == "the mountain's name"
    assert props["unit"]["enum"] == ["m", "ft"] and props["unit"]["default"] == "m"
    assert height.parameters["required"] == ["name"]
    assert height.validate({"name": "alpha"}) == {"name": "alpha", "unit": "m"}
    with pytest.raises(ValueError, match="unit"):
        height.validate({"name": "alpha", "unit": "km"})
    with pytest.raises(ValueError, match="color: Extra inputs"):
        height.validate({"name": "alpha", "color": 1})


def test_kwargs_have_no_schema_and_bad_names_are_refused() -> None:
    def loose(**kwargs: int) -> int:
        return 0

    with pytest.raises(InputError, match=r"\*\*kwargs"):
        make_tool(loose)
    with pytest.raises(InputError, match="tool name"):
        make_tool(lambda: 1, name="1bad name")


def _path(*tools, max_output_chars: int = 4000) -> tuple[ToolPath, list]:
    records: list = []
    return ToolPath(ToolBox(tools), max_output_chars), records


def test_every_failure_becomes_the_result_and_is_recorded() -> None:
    @tool(timeout_s=0.2)
    async def slow() -> str:
        """Hangs."""
        await asyncio.sleep(30)
        return "late"

    @tool
    def boom(x: int) -> int:
        """Raises."""
        raise ValueError(f"bad {x}")

    @tool
    def opaque() -> object:
        """Returns something JSON cannot carry."""
        return object()

    @tool
    def huge() -> str:
        """Returns a lot."""
        return "x" * 10_000

    path, _ = _path(slow, boom, opaque, huge, height, max_output_chars=100)
    records: list = []
    scope = ToolScope(agent="a", node="n", record=records.append)

    async def go() -> list:
        calls = [ToolCall("slow"), ToolCall("boom", {"x": 3}), ToolCall("opaque"), ToolCall("huge"),
                 ToolCall("height", '{"name": 7}'), ToolCall("nope"), ToolCall("height", "{not json"),
                 ToolCall("height", {"name": "beta"})]
        return list(await asyncio.gather(*(path(c, None, scope) for c in calls)))

    out = asyncio.run(go())
    errors = [o.error for o in out]
    assert "timed out after 0.2 s" in errors[0]
    assert "ValueError: bad 3" in errors[1]
    assert "not JSON-serialisable" in errors[2]
    assert errors[3] is None and out[3].trace.truncated and "[truncated: 100 of 10000 characters]" in out[3].content
    assert "invalid arguments for height: name" in errors[4]
    assert "there is no tool 'nope'" in errors[5] and "height" in errors[5]
    assert "arguments are not JSON" in errors[6]
    assert errors[7] is None and out[7].value == 5000.0 and out[7].content == "5000.0"
    assert all(o.content.startswith("error: ") for o in out if o.error)
    assert sorted(r.call_id for r in records) == sorted(o.call_id for o in out)
    assert {r.name for r in records} == {"slow", "boom", "opaque", "huge", "height", "nope"}
    assert all(r.agent == "a" and r.node == "n" for r in records)


def test_the_allow_list_refuses_tools_it_does_not_name() -> None:
    path, _ = _path(height)
    out = asyncio.run(path(ToolCall("height", {"name": "alpha"}), allowed=[]))
    assert out.error and "there is no tool 'height'" in out.error


def test_pure_tools_run_once_per_arguments_even_when_called_at_once() -> None:
    runs: list[str] = []

    @tool(pure=True)
    async def fetch(key: str) -> str:
        """A pure look-up."""
        runs.append(key)
        await asyncio.sleep(0.05)
        return key.upper()

    path, _ = _path(fetch)

    async def go() -> list:
        first = await asyncio.gather(*(path(ToolCall("fetch", {"key": "a"})) for _ in range(3)))
        again = await path(ToolCall("fetch", {"key": "a"}))
        other = await path(ToolCall("fetch", {"key": "b"}))
        return [*first, again, other]

    out = asyncio.run(go())
    assert runs == ["a", "b"]
    assert [o.content for o in out] == ["A", "A", "A", "A", "B"]
    assert [o.trace.cache_hit for o in out] == [False, True, True, True, False]


def test_the_concurrency_cap_holds_across_callers() -> None:
    active, peak = 0, 0

    @tool(max_concurrency=2)
    async def busy(i: int) -> int:
        """Counts how many run at once."""
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1
        return i

    path, _ = _path(busy)

    async def go() -> list:
        return list(await asyncio.gather(*(path(ToolCall("busy", {"i": i})) for i in range(6))))

    out = asyncio.run(go())
    assert peak == 2 and [o.value for o in out] == list(range(6))


def test_list_entries_are_found_while_the_json_streams() -> None:
    text = '{"calls": [{"id": 1, "args": {"q": "a } tricky \\" {"}}, {"id": 2, "args": {}}], "x": [{"id": 9}]}'
    scan = ListEntries()
    seen: list[tuple[int, int]] = []
    for i, ch in enumerate(text):
        for entry in scan.feed(ch):
            seen.append((entry["id"], i))
    assert [e for e, _ in seen] == [1, 2]
    assert seen[0][1] == text.index('}}, {"id": 2') + 1  # the first entry is out as soon as its brace closes


class Verdict(BaseModel):
    verdict: Literal["approve", "revise"]
    reason: str


def test_output_specs_bound_strings_and_validate() -> None:
    spec = output_spec(Verdict)
    assert spec.schema["properties"]["reason"]["maxLength"] == 400
    counted = output_spec({"type": "object", "properties": {"n": {"type": "integer"}, "k": {"type": "number",
                                                                                             "maximum": 5}}})
    assert counted.schema["properties"]["n"] == {"type": "integer", "minimum": -10**12, "maximum": 10**12}
    assert counted.schema["properties"]["k"] == {"type": "number", "maximum": 5}  # the caller's own bound stands
    assert spec.validate('{"verdict": "approve", "reason": "ok"}') == Verdict(verdict="approve", reason="ok")
    with pytest.raises(OutputInvalid, match="verdict"):
        spec.validate('{"verdict": "maybe", "reason": "ok"}')
    assert output_spec(["yes", "no"]).validate(" no ") == "no"
    with pytest.raises(OutputInvalid):
        output_spec(r"\d+").validate("12a")
    with pytest.raises(InputError):
        output_spec(42)
    with pytest.raises(InputError, match="regex"):
        output_spec("(unclosed")


def test_a_reply_with_a_number_too_long_for_int_is_invalid_not_a_crash() -> None:
    # json.loads raises a plain ValueError (no .msg) for an integer beyond Python's digit limit.
    with pytest.raises(OutputInvalid, match="not JSON.*digits"):
        output_spec({"type": "object"}).validate('{"n": ' + "9" * 5000 + "}")
    with pytest.raises(OutputInvalid, match="not JSON .* at character"):
        output_spec({"type": "object"}).validate('{"n": ')


def test_a_bad_reply_is_retried_once_with_the_error_then_fails_clearly() -> None:
    replies = iter(['{"verdict": "maybe", "reason": "x"}', '{"verdict": "revise", "reason": "fix it"}'])
    backend = FakeBackend(lambda r: next(replies), grammar=False)
    runtime = runtime_for(Config(backend="fake"), backend, save_runs=False)
    result, trace = asyncio.run(runtime.call(Call([{"role": "user", "content": "judge"}], output=Verdict)))
    assert result.parsed == Verdict(verdict="revise", reason="fix it")
    assert trace.extra["output"] == {"kind": "json", "valid": True, "attempt": 2, "tool_calls": []}
    retry = backend.requests[1].messages
    assert retry[-2]["content"].startswith('{"verdict": "maybe"') and "verdict" in retry[-1]["content"]
    assert backend.requests[0].output.kind == "json"

    backend = FakeBackend(lambda r: "not json", grammar=False)
    runtime = runtime_for(Config(backend="fake"), backend, save_runs=False)
    with pytest.raises(OutputError, match="broke its output schema twice"):
        asyncio.run(runtime.call(Call([{"role": "user", "content": "judge"}], output=Verdict)))
    assert len(backend.requests) == 2


def test_a_reply_under_tools_gives_tool_calls_and_the_prompt_names_them() -> None:
    backend = FakeBackend(lambda r: json.dumps({"tool_calls": [{"name": "height", "arguments": {"name": "alpha"}}]}))
    runtime = runtime_for(Config(backend="fake"), backend, save_runs=False)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How tall is Alpha?"}]
    result, trace = asyncio.run(runtime.call(Call(messages, tools=[height], tool_choice="required")))
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("height", {"name": "alpha"})]
    sent = backend.requests[0]
    assert sent.messages[0]["content"].startswith("Be brief.") and "- height(" in sent.messages[0]["content"]
    assert "must call at least one tool" in sent.messages[0]["content"]
    assert trace.extra["output"]["tool_calls"] == ["height"]


def test_reply_specs_follow_tool_choice() -> None:
    offered = specs([height, {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}])
    auto = reply_spec(offered, ToolChoice.parse("auto"))
    assert len(auto.schema["anyOf"]) == 2 and auto.validate('{"content": "hi"}') == {"content": "hi"}
    named = reply_spec(offered, ToolChoice.parse({"type": "function", "function": {"name": "other"}}), parallel=False)
    assert named.schema["properties"]["tool_calls"]["maxItems"] == 1
    assert named.schema["properties"]["tool_calls"]["items"]["properties"]["name"] == {"const": "other"}
    assert reply_spec(offered, ToolChoice.parse("none")) is None
    with pytest.raises(InputError):
        ToolChoice.parse("sometimes")
    with pytest.raises(InputError, match="not among the tools"):
        reply_spec(offered, ToolChoice.parse({"type": "function", "function": {"name": "missing"}}))


def test_tool_turns_become_plain_turns() -> None:
    chat = [{"role": "user", "content": "Alpha?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "height", "arguments": '{"name": "alpha"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "4000"}]
    plain = plain_messages(chat, "TOOLS")
    assert plain[0] == {"role": "system", "content": "TOOLS"}
    assert json.loads(plain[2]["content"]) == {"tool_calls": [{"name": "height", "arguments": {"name": "alpha"}}]}
    assert plain[3] == {"role": "user", "content": "Tool result (height): 4000"}
    assert all(isinstance(m["content"], str) for m in plain)


def test_the_public_api_has_tools() -> None:
    import vivace

    assert vivace.tool is tool and vivace.ToolCall is ToolCall
    assert asyncio.run(height.invoke({"name": "beta", "unit": "m"})) == 5000.0


def test_the_fake_backend_keeps_to_the_spec_as_a_grammar_would_unless_told_not_to() -> None:
    runtime = runtime_for(Config(backend="fake"), FakeBackend(lambda r: "free text"), save_runs=False)
    result, _ = asyncio.run(runtime.call(Call([{"role": "user", "content": "judge"}], output=Verdict)))
    assert isinstance(result.parsed, Verdict) and result.parsed.verdict == "approve"
    result, _ = asyncio.run(runtime.call(Call([{"role": "user", "content": "pick"}], output=["b", "a"])))
    assert result.parsed == "b"


def test_a_reply_under_tools_holds_no_more_calls_than_its_token_cap_fits() -> None:
    offered = specs([height])
    assert reply_spec(offered, ToolChoice(), max_tokens=160).schema["anyOf"][0]["properties"]["tool_calls"][
        "maxItems"] == 2
    assert reply_spec(offered, ToolChoice(), max_tokens=4096).schema["anyOf"][0]["properties"]["tool_calls"][
        "maxItems"] == 8


def test_plugin_tools_load_from_entry_points_and_a_broken_one_is_skipped() -> None:
    from importlib.metadata import EntryPoint

    box = ToolBox()
    box.load_plugins([EntryPoint("height", "tests.runtime.test_tools:height", "vivace.tools"),
                      EntryPoint("many", "tests.runtime.test_tools:PLUGIN_TOOLS", "vivace.tools"),
                      EntryPoint("broken", "tests.runtime.no_such_module:tool", "vivace.tools")])
    assert box.names() == ["height", "shout"]
    assert box.get("shout").description == "Upper-case a word." and box.get("height").pure
    assert [name for name, _ in box.broken] == ["broken"] and "ModuleNotFoundError" in box.broken[0][1]


def shout(word: str) -> str:
    """Upper-case a word."""
    return word.upper()


PLUGIN_TOOLS = [shout]
