"""The built-in ``chat`` agent: a whole chat request as one model call, for ``vivace serve``'s vivace-* models.

Why an agent and not a side door in the server: a request with tools, a
response format or earlier turns is still one run, so it gets the same call
path (context policy, limiter, priority), the same record in ``runs.jsonl``
and ``/v1/runs/{id}``, and cancellation like any other. The SoT controller
only fits one fresh question without tools; everything else is this agent.

The request's chat settings come in the run's ``options["chat"]``:
``messages`` (OpenAI dicts, assistant ``tool_calls`` and ``tool`` turns
included; the call path renders them for any chat template), ``tools``,
``tool_choice``, ``parallel_tool_calls`` and ``response_format``. The agent
returns the reply's text; when the model called tools, the run's answer is
the reply as written (its JSON) and ``meta["tool_calls"]`` holds OpenAI's
entries. Call ids are ``call_<run id>_<n>``, so a stream can name each call
the moment its entry is complete, before the reply is validated.
"""

from __future__ import annotations

import json
from typing import Any

from vivace.agents.base import Agent, AgentContext, Node, StepInput, current_step
from vivace.agents.events import AgentDelta
from vivace.agents.registry import REGISTRY
from vivace.agents.sampling import call_sampling
from vivace.errors import InputError
from vivace.runtime.call import Call
from vivace.runtime.tool_calls import ToolChoice, openai_tool_calls

NAME = "chat"


def call_id(run_id: str, index: int) -> str:
    """The id of the ``index``-th tool call of a run's reply: known before the reply is done, unique per run."""
    return f"call_{run_id}_{index}"


def attempt_id(run_id: str, attempt: int) -> str:
    """The ``request_id`` of the chat call's streamed text: a retry streams under a new one."""
    return f"{run_id}/{NAME}/{attempt}"


def response_output(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The call's ``output=`` for OpenAI's ``response_format`` (None: free text)."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        schema = ((response_format or {}).get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) and schema else {"type": "object"}
    raise InputError(f"response_format type {kind!r} is not text, json_object or json_schema")


def structured(settings: dict[str, Any]) -> bool:
    """True when the reply is JSON the server must read: tools offered and not turned off."""
    return bool(settings.get("tools")) and ToolChoice.parse(settings.get("tool_choice")).mode != "none"


class ChatAgent(Agent):
    name = NAME
    description = ("A whole chat (system, earlier turns, tool calls and results) as one call, with tools and a "
                   "response format: what vivace serve runs for chat requests to its vivace-* models.")

    def build(self, ctx: AgentContext) -> Node:
        async def node(inp: StepInput) -> str:
            settings: dict[str, Any] = ctx.options.chat or {}
            # Served as the model ``chat`` through the agent path: the earlier turns, then the task.
            messages = list(settings.get("messages")
                            or [*ctx.options.messages, {"role": "user", "content": inp.get("task", "")}])
            tools = tuple(settings.get("tools") or ())
            output = response_output(settings.get("response_format"))
            schema_bound = structured(settings) or output is not None
            run = current_step()
            step, agent = (run.step, run.agent) if run else (NAME, NAME)
            run_id = ctx.tracer.run_id
            sampling = call_sampling({}, ctx.options, ctx.config.max_tokens, max_tokens=None, temperature=None,
                                     # a penalty on repeats fights JSON's own repeated quotes and braces
                                     repetition_penalty=1.0 if schema_bound else None)
            call = Call(messages=messages, **sampling, node=step, agent=agent, output=output, tools=tools,
                        tool_choice=settings.get("tool_choice"),
                        parallel_tool_calls=settings.get("parallel_tool_calls") is not False)
            before = len(ctx.tracer.calls)

            def on_text(text: str) -> None:  # the call path records a failed attempt before it retries
                ctx.tracer.emit(AgentDelta(run_id, step=step, agent=agent, text=text,
                                           request_id=attempt_id(run_id, len(ctx.tracer.calls) - before + 1)))

            ctx.tracer.meta["chat"] = {
                "roles": [m.get("role") for m in messages],
                "tools": [(t.get("function") or {}).get("name") for t in tools if isinstance(t, dict)],
                "tool_choice": settings.get("tool_choice"),
                "response_format": (settings.get("response_format") or {}).get("type", "text"),
            }
            result, _ = await ctx.send(call, on_text)
            ctx.tracer.meta["finish_reason"] = result.finish_reason
            if result.tool_calls:
                for i, c in enumerate(result.tool_calls):
                    c.id = call_id(run_id, i)
                ctx.tracer.meta["tool_calls"] = openai_tool_calls(result.tool_calls)
                return json.dumps({"tool_calls": [{"name": c.name, "arguments": c.arguments}
                                                  for c in result.tool_calls]}, ensure_ascii=False)
            return result.text.strip()

        return node


REGISTRY.register(ChatAgent(), "built-in")
