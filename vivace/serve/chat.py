"""Chat requests beyond one question: tools, ``response_format``, earlier turns; and the reply a client reads.

Why its own module: the OpenAI fields for tools and structured output are
checked here with pydantic (a bad one is a one-line 400 before any run
starts), and a run's events become what a client reads: content deltas, or
``delta.tool_calls`` entries sent as each call's JSON entry closes in the
model's stream (``vivace.runtime.json_stream.ListEntries``), then the final
message (``content``, or ``tool_calls`` with ``finish_reason: "tool_calls"``).
The model call itself is the ``chat`` agent's (``vivace.agents.chat``).

What a client has read cannot be taken back, and the call path retries a
reply that breaks its schema once: so a ``response_format`` reply is sent
whole once validated, and a tool call goes out only when its entry is
complete JSON (decoded under the schema, it is valid by construction).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from vivace.agents.chat import call_id, structured
from vivace.agents.events import AgentDelta, AnswerDelta, Event
from vivace.choices import ToolChoiceMode
from vivace.runtime.json_stream import ListEntries
from vivace.runtime.tool_calls import TOOL_CHOICE_FORMS, TOOL_CHOICES
from vivace.serve.stream import AnswerStream
from vivace.trace import RunTrace

log = logging.getLogger(__name__)

CHAT_ROLES = ("user", "assistant", "tool")  # turns that make a request more than one fresh question
_FIRST_KEY = re.compile(r'\s*\{\s*"(tool_calls|content)"\s*:\s*')


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "object") != "object":
            raise ValueError('parameters must be a JSON schema of an object ("type": "object")')
        return value


class ToolDef(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    name: str = Field(min_length=1)


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


def _choice_shape(value: Any) -> Any:
    """One message for any malformed ``tool_choice`` (a union's own errors name its members, not the field)."""
    named = isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict)
    if value in TOOL_CHOICES or named:
        return value
    raise ValueError(f"must be {TOOL_CHOICE_FORMS}")


ToolChoiceField = Annotated[Union[ToolChoiceMode, NamedToolChoice], BeforeValidator(_choice_shape)]


class JsonSchema(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str = Field(default="reply", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    schema_: dict[str, Any] = Field(alias="schema", min_length=1)


class ResponseFormat(BaseModel):
    """``text``, ``json_object``, or ``json_schema`` with its schema (one model: errors name the field, not a tag)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError('type "json_schema" needs json_schema: {"name": ..., "schema": {...}}')
        return self


def check_tools(tools: list[ToolDef] | None, choice: ToolChoiceField | None) -> str | None:
    """Why ``tools`` and ``tool_choice`` do not go together (None: they do)."""
    names = [t.function.name for t in tools or ()]
    if len(set(names)) != len(names):
        return f"tools: function names must be unique, got {', '.join(names)}"
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        return f"tool_choice: names function {choice.function.name!r}, which is not among the tools"
    if choice == "required" and not names:
        return "tool_choice: 'required' needs tools"
    return None


def needs_chat(messages: list[dict[str, Any]], structured: bool) -> bool:
    """True unless the request is one fresh question without tools or a JSON reply (the SoT controller's case)."""
    turns = [m for m in messages if m.get("role") in CHAT_ROLES]
    fresh = len(turns) == 1 and turns[0].get("role") == "user"
    return structured or not fresh


def chat_settings(body: Any) -> dict[str, Any]:
    """The ``chat`` agent's ``options["chat"]`` from a validated request."""
    choice = body.tool_choice
    return {
        "messages": [message_dict(m) for m in body.messages],
        "tools": [t.model_dump(exclude_none=True) for t in body.tools or ()],
        "tool_choice": choice.model_dump() if isinstance(choice, BaseModel) else choice,
        "parallel_tool_calls": body.parallel_tool_calls,
        "response_format": body.response_format.model_dump(by_alias=True, exclude_none=True)
        if body.response_format else None,
    }


def message_dict(message: BaseModel) -> dict[str, Any]:
    """One OpenAI message as the call path takes it: role and content, plus its tool fields when it has them."""
    data = message.model_dump()
    out = {"role": data["role"], "content": data.get("content")}
    out.update({k: data[k] for k in ("tool_calls", "tool_call_id", "name") if data.get(k) is not None})
    return out


def _string_so_far(body: str) -> tuple[str, bool]:
    """The decoded part of a JSON string body that has fully arrived, and whether the string has closed."""
    i = safe = 0
    while i < len(body):
        if body[i] == '"':
            return _decode(body[:i]), True
        size = 1
        if body[i] == "\\":
            size = 2
            if body[i + 1: i + 2] == "u":
                # a high surrogate's escape waits for its low half
                size = 12 if re.fullmatch(r"[dD][89abAB][0-9a-fA-F]{2}", body[i + 2: i + 6]) else 6
        if i + size > len(body):
            break
        i = safe = i + size
    return _decode(body[:safe]), False


def _decode(raw: str) -> str:
    try:
        return str(json.loads(f'"{raw}"'))
    except ValueError:  # not JSON after all: the call path's validation reports it
        return ""


class ReplyStream:
    """What an OpenAI client reads of one run: feed it every event; ``take()`` gives the deltas to send now.

    ``chat`` is a run of the ``chat`` agent: its call's text is the reply
    (JSON when ``structured``); otherwise the answer comes as ``AnswerStream``
    lets it (SoT points in order, agents at the end).
    """

    def __init__(self, run_id: str, streams_answer: bool, chat: dict[str, Any] | None = None) -> None:
        self.run_id = run_id
        # A JSON reply (response_format) goes whole once validated: a retried reply's text cannot be taken back.
        json_reply = chat is not None and (chat.get("response_format") or {}).get("type", "text") != "text"
        self.answer = AnswerStream(streams_answer=streams_answer or (chat is not None and not json_reply))
        self.chat = chat
        self.json = chat is not None and structured(chat)
        self._attempt = ""
        self._entries = ListEntries()
        self._kind: str | None = None  # "tool_calls" or "content", once the reply's first key has arrived
        self._content = ""  # decoded content of a {"content": ...} reply, as far as it has arrived
        self.calls: list[dict[str, Any]] = []  # tool-call entries sent
        self._pending: list[dict[str, Any]] = []

    def __call__(self, event: Event) -> None:
        if self.chat is None:
            self.answer(event)
        elif isinstance(event, AgentDelta):
            if event.request_id != self._attempt:  # a retry: a fresh reply; what was sent stays sent
                if self._attempt:
                    log.warning("run %s: the reply broke its schema and is retried; the stream keeps what it sent",
                                event.run_id)
                self._attempt, self._entries, self._kind, self._content = event.request_id, ListEntries(), None, ""
            if self.json:
                self._structured(event.text)
            else:
                self.answer(AnswerDelta(event.run_id, text=event.text))

    def _structured(self, text: str) -> None:
        fresh = self._entries.feed(text)
        if self._kind is None and (m := _FIRST_KEY.match(self._entries.text)):
            self._kind = m.group(1)
        if self._kind == "tool_calls":
            for entry in fresh:
                self._call(entry.get("name", ""), entry.get("arguments", {}))
        elif self._kind == "content":
            body = self._entries.text[_FIRST_KEY.match(self._entries.text).end():]  # type: ignore[union-attr]
            if body.startswith('"'):
                decoded, _ = _string_so_far(body[1:])
                if len(decoded) > len(self._content):
                    self.answer(AnswerDelta(self.run_id, text=decoded[len(self._content):]))
                    self._content = decoded

    def _call(self, name: str, arguments: Any) -> None:
        index = len(self.calls)
        entry = {"index": index, "id": call_id(self.run_id, index), "type": "function",
                 "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}
        self.calls.append(entry)
        self._pending.append({"tool_calls": [entry]})

    def take(self) -> list[dict[str, Any]]:
        """The deltas that may be sent now: content text, and tool calls whose entries are complete."""
        out, self._pending = self._pending, []
        if text := self.answer.take():
            out.insert(0, {"content": text})
        return out

    def finish(self, trace: RunTrace) -> list[dict[str, Any]]:
        """The rest of the reply once the run is done: content not sent yet, or tool calls not sent yet."""
        final = trace.meta.get("tool_calls") if self.chat is not None else None
        if final:
            sent = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in self.calls]
            want = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in final]
            if want[:len(sent)] != sent:
                log.warning("run %s: the streamed tool calls differ from the final reply's", trace.run_id)
            for c in final[len(sent):]:
                self._call(c["function"]["name"], json.loads(c["function"]["arguments"]))
        else:
            self.answer.finish(trace.answer)
        return self.take()

    def finish_reason(self, trace: RunTrace) -> str:
        if self.chat is None:
            return self.answer.finish_reason(trace)
        if trace.meta.get("tool_calls"):
            return "tool_calls"
        return "length" if trace.meta.get("finish_reason") == "length" else "stop"

    def message(self, trace: RunTrace) -> dict[str, Any]:
        """The whole ``choices[0].message`` of a non-streamed reply."""
        if self.chat is not None and (calls := trace.meta.get("tool_calls")):
            return {"role": "assistant", "content": None, "tool_calls": calls}
        return {"role": "assistant", "content": trace.answer}
