"""`vivace serve` speaks the whole chat API: tools, tool_choice, response_format, earlier turns, tool turns.

Clients are the official `openai` SDK and LangChain's `ChatOpenAI`, against
the same `vivace serve` processes as tests/serve/test_serve.py (conftest.py).
The real engine decodes every tool call under a JSON schema, so every call
it returns must validate against its tool's parameters; the fake backend
covers the protocol (400s, what reaches the backend).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.serve.conftest import Server

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "description": "The current local time in a timezone.",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}}}
TOOLS = [WEATHER, CLOCK]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris right now, in celsius?"}]


def check_calls(calls: Any, allowed: set[str] | None = None) -> list[dict[str, Any]]:
    """Every call names an offered tool and its arguments validate against that tool's schema; ids are unique."""
    assert calls, "no tool calls"
    out = []
    for call in calls:
        name, args = call.function.name, json.loads(call.function.arguments)
        assert name in (allowed or SCHEMAS) and call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(args, SCHEMAS[name])
        function = {"name": name, "arguments": call.function.arguments}
        out.append({"id": call.id, "type": "function", "function": function})
    assert len({c["id"] for c in out}) == len(out)
    return out


# ---------------------------------------------------------------- the protocol, on the fake backend


def test_bad_tool_fields_are_one_line_openai_errors(fake: Server) -> None:
    client = fake.client()
    bad: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools.0.function.name"),
        ({"tools": [{"type": "retrieval"}]}, "tools.0.type"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
         "parameters must be a JSON schema of an object"),
        ({"tools": [WEATHER, WEATHER]}, "tools: function names must be unique"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_stock"}}},
         "tool_choice: names function 'get_stock', which is not among the tools"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice: 'required' needs tools"),
        ({"tools": TOOLS, "parallel_tool_calls": "maybe"}, "parallel_tool_calls"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema"),
    ]
    for fields, message in bad:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="vivace-normal", messages=ASK, extra_body=fields)
        text = caught.value.body["message"]  # type: ignore[index]
        assert message in text and "\n" not in text, (fields, text)


@pytest.mark.parametrize("model", ["tidy", "research"])
def test_tools_to_an_agent_or_pipeline_are_a_400_not_a_silent_drop(fake: Server, model: str) -> None:
    for fields in ({"tools": TOOLS}, {"response_format": {"type": "json_object"}}):
        with pytest.raises(openai.BadRequestError) as caught:
            fake.client().chat.completions.create(model=model, messages=ASK, extra_body=fields)
        text = caught.value.body["message"]  # type: ignore[index]
        assert text == (f"tools and response_format are for the models vivace-auto, vivace-sot, vivace-normal; "
                        f"{model!r} is an agent or pipeline that writes its own prompts")


CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "My name is Ada Lovelace."},
        {"role": "assistant", "content": "Hello Ada."}, {"role": "user", "content": "What is my name again?"}]


def fake_tokens(messages: list[dict[str, Any]]) -> int:
    """The fake backend's prompt count (vivace.runtime.fake): words plus 3 per message."""
    return sum(len(m["content"].split()) + 3 for m in messages)


def test_every_turn_reaches_the_backend(fake: Server) -> None:
    raw = fake.client().chat.completions.with_raw_response.create(model="vivace-normal", messages=CHAT)
    done, record = raw.parse(), fake.run(raw.headers["x-vivace-run-id"])
    assert record["status"] == "done" and record["mode"] == "agent:chat" and record["question"] == CHAT[-1]["content"]
    assert record["meta"]["chat"]["roles"] == ["system", "user", "assistant", "user"]
    assert [c["prompt_tokens"] for c in record["calls"]] == [fake_tokens(CHAT)]
    assert done.choices[0].message.content == record["answer"] and done.choices[0].finish_reason == "stop"


def test_an_agent_gets_the_earlier_turns_as_run_options(fake: Server) -> None:
    # "converse" is a served pipeline whose step is the chat agent: it sends options["messages"] and the task.
    raw = fake.client().chat.completions.with_raw_response.create(model="converse", messages=CHAT)
    record = fake.run(raw.headers["x-vivace-run-id"])
    assert record["status"] == "done" and record["question"] == CHAT[-1]["content"]
    assert record["meta"]["chat"]["roles"] == ["system", "user", "assistant", "user"]
    assert [c["prompt_tokens"] for c in record["calls"]] == [fake_tokens(CHAT)]


def test_tool_turns_reach_the_backend_as_plain_turns(fake: Server) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                             "arguments": '{"city": "Paris", "unit": "celsius"}'}}
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "21 C and sunny"}]
    with fake.client().chat.completions.with_streaming_response.create(
            model="vivace-normal", messages=messages, tools=TOOLS, tool_choice="none", stream=True) as response:
        run_id = response.headers["x-vivace-run-id"]
        chunks = [c for c in response.parse() if c.choices]
    record = fake.run(run_id)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert record["meta"]["chat"]["roles"] == ["user", "assistant", "tool"]
    # The fake echoes the last turn it got: the tool result, as the plain user turn every chat template renders.
    assert text == record["answer"] and "Tool result (get_weather): 21 C and sunny" in text
    assert chunks[-1].choices[0].finish_reason == "stop" and not any(c.choices[0].delta.tool_calls for c in chunks)


def test_tool_calls_have_openai_shape_whole_and_streamed(fake: Server) -> None:
    # The fake backend keeps to the reply's schema as a grammar does: a made-up call, in the real reply format.
    client = fake.client()
    raw = client.chat.completions.with_raw_response.create(model="vivace-normal", messages=ASK, tools=TOOLS,
                                                           tool_choice="required")
    whole, record = raw.parse(), fake.run(raw.headers["x-vivace-run-id"])
    assert whole.choices[0].finish_reason == "tool_calls" and whole.choices[0].message.content is None
    assert check_calls(whole.choices[0].message.tool_calls) == record["meta"]["tool_calls"]
    with client.chat.completions.with_streaming_response.create(model="vivace-normal", messages=ASK, tools=TOOLS,
                                                                tool_choice="required", stream=True) as response:
        run_id = response.headers["x-vivace-run-id"]
        chunks = [c for c in response.parse() if c.choices]
    streamed = [d.model_dump(exclude_none=True) for c in chunks for d in c.choices[0].delta.tool_calls or ()]
    assert [{k: v for k, v in d.items() if k != "index"} for d in streamed] == fake.run(run_id)["meta"]["tool_calls"]
    assert [d["index"] for d in streamed] == list(range(len(streamed)))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# ---------------------------------------------------------------- the real engine, the openai SDK


@pytest.mark.engine
def test_a_tool_round_trip(engine_server: Server) -> None:
    client = engine_server.client(timeout=600)
    raw = client.chat.completions.with_raw_response.create(model="vivace-normal", messages=ASK, tools=TOOLS,
                                                           tool_choice="required", max_tokens=200)
    first, record = raw.parse(), engine_server.run(raw.headers["x-vivace-run-id"])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = check_calls(choice.message.tool_calls)
    assert record["status"] == "done" and record["meta"]["tool_calls"] == calls
    results = [{"role": "tool", "tool_call_id": c["id"], "content": "21 C, sunny, light wind"} for c in calls]
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": calls}, *results]
    raw = client.chat.completions.with_raw_response.create(model="vivace-normal", messages=history, tools=TOOLS,
                                                           tool_choice="none", max_tokens=64)
    final, after = raw.parse(), engine_server.run(raw.headers["x-vivace-run-id"])
    assert final.choices[0].finish_reason in ("stop", "length") and final.choices[0].message.content.strip()
    assert not final.choices[0].message.tool_calls
    assert after["meta"]["chat"]["roles"] == ["user", "assistant", *["tool"] * len(calls)]
    # The calls and their results reached the model: its prompt grew by them.
    assert after["calls"][0]["prompt_tokens"] > record["calls"][0]["prompt_tokens"]


@pytest.mark.engine
def test_tool_choice_names_one_function_or_none(engine_server: Server) -> None:
    client = engine_server.client(timeout=600)
    named = client.chat.completions.create(model="vivace-normal", messages=ASK, tools=TOOLS, max_tokens=200,
                                           tool_choice={"type": "function", "function": {"name": "get_time"}})
    check_calls(named.choices[0].message.tool_calls, allowed={"get_time"})
    plain = client.chat.completions.create(model="vivace-normal", messages=ASK, tools=TOOLS, tool_choice="none",
                                           max_tokens=48)
    assert plain.choices[0].message.content.strip() and not plain.choices[0].message.tool_calls
    assert plain.choices[0].finish_reason in ("stop", "length")
    single = client.chat.completions.create(model="vivace-normal", messages=ASK, tools=TOOLS, max_tokens=200,
                                            tool_choice="required", parallel_tool_calls=False)
    assert len(check_calls(single.choices[0].message.tool_calls)) == 1


@pytest.mark.engine
def test_streamed_tool_calls_add_up_to_the_recorded_calls(engine_server: Server) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris and in Rome, in celsius?"}]
    with engine_server.client(timeout=600).chat.completions.with_streaming_response.create(
            model="vivace-normal", messages=ask, tools=TOOLS, tool_choice="required", max_tokens=200,
            stream=True) as response:
        run_id = response.headers["x-vivace-run-id"]
        chunks = [c for c in response.parse() if c.choices]
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:  # accumulated as the SDK's users do: by index, the arguments concatenated
        for d in chunk.choices[0].delta.tool_calls or ():
            entry = calls.setdefault(d.index, {"id": None, "type": "function",
                                               "function": {"name": "", "arguments": ""}})
            entry["id"] = d.id or entry["id"]
            entry["function"]["name"] += d.function.name or ""
            entry["function"]["arguments"] += d.function.arguments or ""
    record = engine_server.run(run_id)
    assert record["status"] == "done" and [calls[i] for i in sorted(calls)] == record["meta"]["tool_calls"]
    assert [c.choices[0].finish_reason for c in chunks][-1] == "tool_calls"
    assert not any(c.choices[0].delta.content for c in chunks)
    for entry in record["meta"]["tool_calls"]:
        jsonschema.validate(json.loads(entry["function"]["arguments"]), SCHEMAS[entry["function"]["name"]])


@pytest.mark.engine
def test_response_format_json_schema_is_valid_json(engine_server: Server) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"},
                                               "is_capital": {"type": "boolean"}},
              "required": ["city", "country", "is_capital"], "additionalProperties": False}
    client = engine_server.client(timeout=600)
    done = client.chat.completions.create(
        model="vivace-normal", messages=[{"role": "user", "content": "Name the largest city of France."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}, max_tokens=96)
    jsonschema.validate(json.loads(done.choices[0].message.content), schema)
    assert done.choices[0].finish_reason == "stop"
    anything = client.chat.completions.create(model="vivace-normal", messages=ASK, max_tokens=96,
                                              response_format={"type": "json_object"})
    assert isinstance(json.loads(anything.choices[0].message.content), dict)


@pytest.mark.engine
def test_earlier_turns_reach_the_model(engine_server: Server) -> None:
    client = engine_server.client(timeout=600)
    whole = client.chat.completions.with_raw_response.create(model="vivace-normal", messages=CHAT, max_tokens=32)
    alone = client.chat.completions.with_raw_response.create(model="chat", messages=CHAT[-1:], max_tokens=32)
    records = [engine_server.run(r.headers["x-vivace-run-id"]) for r in (whole, alone)]
    assert all(r["status"] == "done" and r["mode"] == "agent:chat" for r in records)
    assert whole.parse().choices[0].message.content.strip()
    # The same agent and the same last message: the whole chat costs the turns before it on top.
    assert records[0]["calls"][0]["prompt_tokens"] > records[1]["calls"][0]["prompt_tokens"] + 10


@pytest.mark.engine
def test_thirty_two_concurrent_tool_call_requests(engine_server: Server) -> None:
    cities = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Dakar"]

    async def one(client: openai.AsyncOpenAI, i: int) -> list[dict[str, Any]]:
        ask = [{"role": "user", "content": f"What is the weather in {cities[i % len(cities)]}, in celsius?"}]
        done = await client.chat.completions.create(model="vivace-normal", messages=ask, tools=TOOLS,
                                                    tool_choice="required", max_tokens=200)
        assert done.choices[0].finish_reason == "tool_calls"
        return check_calls(done.choices[0].message.tool_calls)

    async def all_of_them() -> list[list[dict[str, Any]]]:
        async with engine_server.aclient(timeout=900) as client:
            return await asyncio.gather(*(one(client, i) for i in range(32)))

    replies = asyncio.run(all_of_them())
    assert len(replies) == 32 and len({c["id"] for calls in replies for c in calls}) == sum(map(len, replies))


# ---------------------------------------------------------------- a real agent framework: LangChain


@pytest.mark.engine
def test_langchain_binds_tools_and_reads_the_result(engine_server: Server) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str, unit: str) -> str:
        """The current weather in a city; unit is celsius or fahrenheit."""
        return f"21 degrees {unit} and sunny in {city}"

    llm = ChatOpenAI(base_url=f"{engine_server.url}/v1", api_key="unused", model="vivace-normal", temperature=0,
                     max_tokens=160, max_retries=0, timeout=600)
    history: list[Any] = [HumanMessage("What is the weather in Paris, in celsius?")]
    asked = llm.bind_tools([get_weather], tool_choice="required").invoke(history)
    assert asked.tool_calls and all(c["name"] == "get_weather" for c in asked.tool_calls)
    for call in asked.tool_calls:
        jsonschema.validate(call["args"], get_weather.args_schema.model_json_schema())  # type: ignore[union-attr]
    history += [asked, *(ToolMessage(get_weather.invoke(c["args"]), tool_call_id=c["id"]) for c in asked.tool_calls)]
    final = llm.invoke(history)
    assert isinstance(final.content, str) and final.content.strip() and not final.tool_calls
    assert final.response_metadata["finish_reason"] in ("stop", "length")
