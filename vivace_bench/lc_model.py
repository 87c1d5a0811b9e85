"""A LangChain chat model over vivace's runtime, and vivace tools as LangChain tools: the bench's baseline.

Why: ``bench tools`` compares vivace's tool orchestration with what a
LangGraph user gets from ``create_react_agent`` on the same engine. That
agent needs a ``BaseChatModel`` with ``bind_tools``; this one sends each turn
as ONE call through vivace's call path (``runtime.call``), so the reply is
decoded under the same JSON schema vivace's own tool calls use (grammar-
constrained tool calls, greedy), and every call leaves the same ``CallTrace``
in the run's ``Scope`` (calls, tokens and schema-valid rate are counted the
same way for both sides). The tools run through the runtime's tool path with
its cache off: a LangGraph user has no cache, and the path only adds the
record (``ToolTrace``), timed by the same clock as vivace's tool calls.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict

from vivace.runtime.call import Call, current_scope
from vivace.runtime.tool_path import ToolCall, ToolOutcome, ToolScope
from vivace.runtime.tools import Tool

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content
                       if isinstance(p, str) or (isinstance(p, dict) and p.get("type") == "text"))
    return "" if content is None else str(content)


def to_openai(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as OpenAI chat dicts: assistant ``tool_calls``, ``tool`` turns with ``tool_call_id``."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role = _ROLES.get(m.type, "user")
        entry: dict[str, Any] = {"role": role, "content": _text(m.content)}
        if isinstance(m, AIMessage) and m.tool_calls:
            entry["content"] = entry["content"] or None
            entry["tool_calls"] = [{"id": c.get("id") or f"call_{i}", "type": "function",
                                    "function": {"name": c["name"], "arguments": json.dumps(c.get("args") or {})}}
                                   for i, c in enumerate(m.tool_calls)]
        if isinstance(m, ToolMessage):
            entry["tool_call_id"] = m.tool_call_id
            if m.name:
                entry["name"] = m.name
        out.append(entry)
    return out


class VivaceChatModel(BaseChatModel):
    """One model turn = one ``runtime.call``; bound tools are offered with ``tool_choice``, decoded under a schema."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    runtime: Any
    max_tokens: int = 384
    temperature: float = 0.0
    repetition_penalty: float = 1.0
    node: str = "react-langgraph"

    @property
    def _llm_type(self) -> str:
        return "vivace"

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Any | BaseTool], *, tool_choice: str | None = None,
                   **kwargs: Any) -> Runnable[Any, AIMessage]:
        """The tools' OpenAI schemas, sent with every call of the bound model (LangChain's usual shape)."""
        specs = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=specs, tool_choice=tool_choice or "auto", **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        raise NotImplementedError("VivaceChatModel is async only: use ainvoke (the engine runs on the event loop)")

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        tools = kwargs.get("tools") or ()
        call = Call(to_openai(messages), tools=tools, tool_choice=kwargs.get("tool_choice") if tools else None,
                    max_tokens=self.max_tokens, temperature=self.temperature,
                    repetition_penalty=self.repetition_penalty, stop=tuple(stop or ()), retrieve=False,
                    node=self.node, agent=self.node, parallel_tool_calls=kwargs.get("parallel_tool_calls", True))
        result, trace = await self.runtime.call(call)
        calls = [{"name": c.name, "args": c.arguments if isinstance(c.arguments, dict) else {}, "id": c.id,
                  "type": "tool_call"} for c in result.tool_calls]
        usage = {"input_tokens": trace.prompt_tokens, "output_tokens": trace.output_tokens,
                 "total_tokens": trace.prompt_tokens + trace.output_tokens}
        message = AIMessage(content="" if calls else result.text, tool_calls=calls, usage_metadata=usage,
                            response_metadata={"finish_reason": result.finish_reason})
        return ChatResult(generations=[ChatGeneration(message=message)])


def lc_tools(runtime: Any, tools: Sequence[Tool], agent: str = "react-langgraph") -> list[StructuredTool]:
    """vivace ``Tool``s as LangChain tools: the same name, description and JSON schema, run by the tool path.

    The record goes to the current run's ``Scope`` (``record_tool``); the cache is off, as for a LangGraph user.
    """
    def wrap(t: Tool) -> StructuredTool:
        async def run(**arguments: Any) -> str:
            scope = current_scope()
            outcome: ToolOutcome = await runtime.tool_path(
                ToolCall(t.name, arguments), [t.name],
                ToolScope(agent=agent, node="tools", record=scope.record_tool if scope else None, cache=False))
            return outcome.content

        return StructuredTool(name=t.name, description=t.description, args_schema=t.parameters, coroutine=run)

    return [wrap(t) for t in tools]
