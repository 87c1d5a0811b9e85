"""Chat with tools on any backend: the tools in the prompt, the calls decoded under a JSON schema.

Why one mechanism and not each backend's own function calling: the embedded
model's chat template has no tools, and the in-process engine decodes under
a grammar anyway. So the tools are described in a system message (the
package prompt ``tool_use``), the reply is constrained to
``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` (or, with
``tool_choice="auto"``, to that or ``{"content": "..."}``), and earlier
assistant tool calls and tool results are written back into the chat as the
same JSON and as "Tool result" turns. Every template renders that, and the
model sees its own format in the history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from vivace.choices import ToolChoiceMode, values
from vivace.errors import InputError
from vivace.runtime.backend import Message
from vivace.runtime.output import DEFAULT_MAX_STRING, OutputSpec, bound_strings
from vivace.runtime.prompts import load_text
from vivace.runtime.tool_path import ToolCall

MAX_CALLS = 8  # calls in one reply when parallel calls are allowed
TOKENS_PER_CALL = 64  # room one call takes at most: a reply holds no more calls than its token cap fits
MAX_ARGUMENT_STRING = 160  # characters in one string argument: a small model must not loop inside one
TOOL_CHOICES = values(ToolChoiceMode)
TOOL_CHOICE_FORMS = ", ".join(f'"{word}"' for word in TOOL_CHOICES) + ' or {"type": "function", "function": {"name": ...}}'


@dataclass(frozen=True)
class ToolChoice:
    """``auto``, ``none``, ``required``, or one function by name (OpenAI's ``tool_choice``)."""

    mode: str = "auto"
    function: str | None = None

    @classmethod
    def parse(cls, value: Any) -> "ToolChoice":
        if value is None:
            return cls()
        if isinstance(value, str):
            if value not in TOOL_CHOICES:
                raise InputError(f"tool_choice must be one of {', '.join(TOOL_CHOICES)} or a function, got {value!r}")
            return cls(value)
        if isinstance(value, dict):
            name = (value.get("function") or {}).get("name") if isinstance(value.get("function"), dict) else None
            if value.get("type") == "function" and isinstance(name, str) and name:
                return cls("function", name)
        raise InputError(f"tool_choice must be {TOOL_CHOICE_FORMS}")


@dataclass
class ToolSpec:
    """What a model is told about one tool: the OpenAI ``function`` entry."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    @classmethod
    def parse(cls, entry: Any) -> "ToolSpec":
        fn = entry.get("function") if isinstance(entry, dict) and entry.get("type", "function") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InputError('each tool must be {"type": "function", "function": {"name": ..., "parameters": {...}}}')
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise InputError(f"tool {fn['name']!r}: parameters must be a JSON schema object")
        return cls(fn["name"], str(fn.get("description") or ""), params)


def specs(tools: Sequence[Any]) -> list[ToolSpec]:
    """``ToolSpec``s from OpenAI tool entries, ``Tool`` objects (their ``spec()``) or specs; names are unique."""
    out = [t if isinstance(t, ToolSpec) else ToolSpec.parse(t.spec() if hasattr(t, "spec") else t) for t in tools]
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise InputError(f"tool names must be unique: {', '.join(names)}")
    return out


def _call_schema(tool: ToolSpec) -> dict[str, Any]:
    params = dict(tool.parameters)
    params.setdefault("type", "object")
    return {"type": "object", "properties": {"name": {"const": tool.name}, "arguments": params},
            "required": ["name", "arguments"], "additionalProperties": False}


def reply_spec(tools: Sequence[ToolSpec], choice: ToolChoice, parallel: bool = True,
               max_string: int = MAX_ARGUMENT_STRING, max_tokens: int = 512) -> OutputSpec | None:
    """The schema a reply is decoded under; None when ``tool_choice`` is ``none`` (free text).

    Under a grammar a reply can only break its schema by running out of
    tokens, so a reply may hold only as many calls as ``max_tokens`` fits.
    """
    if choice.mode == "none" or not tools:
        return None
    chosen = list(tools)
    if choice.mode == "function":
        chosen = [t for t in tools if t.name == choice.function]
        if not chosen:
            raise InputError(f"tool_choice names {choice.function!r}, which is not among the tools")
    items = _call_schema(chosen[0]) if len(chosen) == 1 else {"anyOf": [_call_schema(t) for t in chosen]}
    calls = {"type": "object", "properties": {"tool_calls": {
        "type": "array", "items": items, "minItems": 1,
        "maxItems": max(1, min(MAX_CALLS, max_tokens // TOKENS_PER_CALL)) if parallel else 1}},
        "required": ["tool_calls"], "additionalProperties": False}
    if choice.mode == "auto":
        content = {"type": "object", "properties": {"content": {"type": "string",
                                                                "maxLength": max(max_string, min(DEFAULT_MAX_STRING,
                                                                                                 2 * max_tokens))}},
                   "required": ["content"],
                   "additionalProperties": False}
        schema: dict[str, Any] = {"anyOf": [calls, content]}
    else:
        schema = calls
    return OutputSpec("json", bound_strings(schema, max_string), name="tool_reply", tool_reply=True)


def tool_prompt(tools: Sequence[ToolSpec], choice: ToolChoice, parallel: bool = True) -> str:
    """The system text that describes the tools and the reply format (package prompt ``tool_use``)."""
    listed = "\n".join(f"- {t.name}({json.dumps(t.parameters.get('properties', {}), separators=(',', ':'))}): "
                       f"{t.description}" for t in tools)
    rule = {"auto": "Call tools when they help; otherwise answer.",
            "required": "You must call at least one tool now.",
            "function": f"You must call {choice.function} now.",
            "none": "Do not call tools now; answer from the results you have."}[choice.mode]
    answer = 'To answer without a tool, reply with {"content": "your answer"}.' if choice.mode == "auto" else ""
    parallel_text = " List several calls at once when they do not depend on each other." if parallel else ""
    return load_text("tool_use", "vivace.runtime").format(tools=listed, rule=rule, parallel=parallel_text,
                                                          answer=answer).strip()


def plain_messages(messages: Sequence[Message], prompt: str | None = None) -> list[Message]:
    """The chat as plain text turns every template renders: tool calls as JSON, tool results as user turns.

    ``prompt`` (the tools' description) joins the system message, or becomes one.
    """
    names: dict[str, str] = {}
    out: list[Message] = []
    for m in messages:
        role, content = m.get("role", "user"), content_text(m.get("content"))
        if role == "assistant" and m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = c.get("function") or {}
                args = fn.get("arguments")
                names[c.get("id", "")] = fn.get("name", "")
                try:
                    args = json.loads(args) if isinstance(args, str) else args
                except ValueError:
                    pass
                calls.append({"name": fn.get("name", ""), "arguments": args if args is not None else {}})
            text = json.dumps({"tool_calls": calls}, ensure_ascii=False)
            out.append({"role": "assistant", "content": f"{content}\n{text}".strip()})
        elif role == "tool":
            name = m.get("name") or names.get(m.get("tool_call_id", ""), "") or "tool"
            out.append({"role": "user", "content": f"Tool result ({name}): {content}"})
        elif role == "developer":
            out.append({"role": "system", "content": content})
        else:
            out.append({"role": role, "content": content})
    if prompt:
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def content_text(content: Any) -> str:
    """A message's text: the string, or the text parts of a content list."""
    if isinstance(content, list):  # content parts: the text ones
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def needs_plain(messages: Sequence[Message]) -> bool:
    """True when the chat holds turns a plain template cannot render as they are."""
    return any(m.get("tool_calls") or m.get("role") in ("tool", "developer") or not isinstance(m.get("content"), str)
               for m in messages)


def parse_reply(value: Any) -> tuple[str | None, list[ToolCall]]:
    """The content, or the tool calls (with fresh ids), of a reply decoded under ``reply_spec``."""
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        calls = [ToolCall(str(c.get("name", "")), c.get("arguments") if isinstance(c.get("arguments"), dict) else {})
                 for c in value["tool_calls"] if isinstance(c, dict)]
        return None, calls
    if isinstance(value, dict) and "content" in value:
        return str(value["content"]), []
    return (value if isinstance(value, str) else json.dumps(value)), []


def openai_tool_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """OpenAI's ``tool_calls`` entries for an assistant message."""
    return [{"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}} for c in calls]
