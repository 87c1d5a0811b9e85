"""The built-in ``tools`` agent: tool calls planned as a graph and run the moment each is planned.

Why this shape: in a ReAct loop every tool call costs a model turn, and the
calls run one after another. Here one planning call writes every call the
task needs, decoded under a JSON schema, with ``"$N"`` standing for the result
of call N (LLMCompiler's plan). Each call is dispatched as soon as its entry
is complete in the model's stream (``vivace.runtime.json_stream``), so tools
run while the rest of the plan is still being decoded; independent calls run
at once, and a call whose arguments name earlier results waits only for
those. A small model's plan often starts repeating itself; an entry that
repeats an earlier one ends the plan call there, as nothing new can follow.
A joiner then answers from the results; when calls failed, the planner gets
one more turn, shown the results and errors (bounded by ``max_replans``).

The ReAct loop stays selectable (``tool_mode = "react"``). ``auto`` plans, and
falls back to ReAct when the plan holds no call; the mode taken and why are in
the run's record (``meta["tools_agent"]``), with the plan and when each call
was dispatched.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from vivace.agents.base import Agent, AgentContext, Node, StepInput, task_text
from vivace.choices import ToolMode
from vivace.errors import InputError, OutputError
from vivace.runtime.call import StopGeneration
from vivace.runtime.json_stream import ListEntries
from vivace.runtime.tool_calls import openai_tool_calls
from vivace.runtime.tool_path import ToolCall, ToolOutcome
from vivace.runtime.tools import Tool

PLAN_TOKENS = 384
TOKENS_PER_ENTRY = 48  # a plan holds no more calls than its token cap has room for
MAX_PLAN_CALLS = PLAN_TOKENS // TOKENS_PER_ENTRY
JOIN_TOKENS = 160
REACT_STEPS = 8
MAX_ANSWER = 400
_REF = re.compile(r"\$(\d{1,2})")


@dataclass
class _Planned:
    """One planned call: its place in the plan, the call, and the result others may wait for."""

    index: int
    tool: str
    args: Any
    done: asyncio.Future[ToolOutcome]
    dispatched_s: float = 0.0  # seconds after the plan call began
    deps: list[int] = field(default_factory=list)


def _refs(value: Any) -> list[int]:
    if isinstance(value, str):
        return [int(n) for n in _REF.findall(value)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def _fill(value: Any, results: dict[int, ToolOutcome]) -> Any:
    """Arguments with ``"$N"`` replaced by call N's result (the value itself when it is the whole argument)."""
    if isinstance(value, str):
        whole = _REF.fullmatch(value.strip())
        if whole and int(whole.group(1)) in results:
            found = results[int(whole.group(1))]
            return found.value if found.value is not None else found.content
        return _REF.sub(lambda m: results[int(m.group(1))].content if int(m.group(1)) in results else m.group(0), value)
    if isinstance(value, dict):
        return {k: _fill(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, results) for v in value]
    return value


def _with_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's argument schema where every argument may also be a reference ``"$N"`` to an earlier result."""
    props = schema.get("properties") or {}
    ref = {"type": "string", "pattern": r"^\$[1-9][0-9]?$"}
    out = dict(schema)
    out["properties"] = {k: (v if v.get("type") == "string" else {"anyOf": [v, ref]}) for k, v in props.items()}
    out.setdefault("type", "object")
    return out


def plan_schema(tools: list[Tool], max_calls: int = MAX_PLAN_CALLS) -> dict[str, Any]:
    """``{"calls": [{"tool": NAME, "args": {...}}]}``: only the tools offered, each with its own arguments."""
    entries = [{"type": "object", "properties": {"tool": {"const": t.name}, "args": _with_refs(t.parameters)},
                "required": ["tool", "args"], "additionalProperties": False} for t in tools]
    items = entries[0] if len(entries) == 1 else {"anyOf": entries}
    return {"type": "object", "properties": {"calls": {"type": "array", "items": items, "maxItems": max_calls}},
            "required": ["calls"], "additionalProperties": False}


JOIN_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": MAX_ANSWER}},
               "required": ["answer"], "additionalProperties": False}


def _listing(tools: list[Tool]) -> str:
    return "\n".join(f"- {t.name}({', '.join(t.parameters.get('properties', {}))}): {t.description}" for t in tools)


def _result_lines(planned: list[_Planned], outcomes: dict[int, ToolOutcome]) -> list[str]:
    """``tool(arg=value) = result`` per call: what the joiner (and a replan) reads."""
    lines = []
    for p in planned:
        got = outcomes.get(p.index)
        args = ", ".join(f"{k}={v}" for k, v in p.args.items()) if isinstance(p.args, dict) else str(p.args)
        lines.append(f"{p.tool}({args}) = {got.content if got else 'not run'}")
    return lines


class ToolsAgent(Agent):
    name = "tools"
    streams_answer = False  # its model text is a plan and a JSON verdict
    description = ("Answers with tools: plans every call at once and runs each the moment it is planned "
                   "(independent calls in parallel), then answers; tool_mode = react for a ReAct loop.")

    def build(self, ctx: AgentContext) -> Node:
        async def node(inp: StepInput) -> str:
            return await self.answer(ctx, task_text(inp))

        return node

    async def answer(self, ctx: AgentContext, task: str) -> str:
        tools = ctx.step_tools() or ctx.runtime.tools.all()
        if not tools:
            raise InputError("agent 'tools' has no tools: pass tools=..., name them in the step (tools = [...]), "
                             "or configure [mcp.NAME] servers")
        mode = str(ctx.options.tool_mode or ToolMode.AUTO)  # checked by RunOptions
        record: dict[str, Any] = {"mode": mode, "why": "asked", "tools": [t.name for t in tools], "plans": [],
                                  "replans": 0, "stream_dispatch": ctx.options.stream_dispatch}
        ctx.tracer.meta["tools_agent"] = record
        if mode == "react":
            return await self._react(ctx, task, tools, record)
        return await self._plan_and_join(ctx, task, tools, record, fallback=mode == "auto")

    async def _plan_and_join(self, ctx: AgentContext, task: str, tools: list[Tool], record: dict[str, Any],
                             fallback: bool) -> str:
        max_replans = ctx.options.max_replans
        lines: list[str] = []
        for round_ in range(max_replans + 1):
            context = task if not lines else f"{task}\n\nResults so far:\n" + "\n".join(lines)
            planned, outcomes = await self._plan(ctx, context, tools, record)
            if not planned and round_ == 0 and fallback:
                record.update(mode="react", why="the plan held no call")
                return await self._react(ctx, task, tools, record)
            if record["mode"] == "auto":  # decided here, so a run that fails later still says which way it went
                record["mode"], record["why"] = "plan", "the plan held calls"
            lines += [line for line in _result_lines(planned, outcomes) if line not in lines]
            failed = [o for o in outcomes.values() if not o.ok]
            if round_ < max_replans and (failed or not planned):  # another plan, told what failed
                record["replans"] += 1
                continue
            messages, _ = ctx.render("tools_joiner", task=task, results="\n".join(lines) or "(no results)")
            joined = await ctx.call(messages, output=JOIN_SCHEMA, max_tokens=JOIN_TOKENS, repetition_penalty=1.0,
                                    retrieve=False, stage="join")
            verdict = joined.parsed or {}
            return str(verdict.get("answer", "")).strip()
        raise AssertionError("unreachable")

    async def _plan(self, ctx: AgentContext, task: str, tools: list[Tool],
                    record: dict[str, Any]) -> tuple[list[_Planned], dict[int, ToolOutcome]]:
        """One planning call; each complete entry is dispatched at once (or all after it, without streaming)."""
        streaming = record["stream_dispatch"]
        planned: list[_Planned] = []
        outcomes: dict[int, ToolOutcome] = {}
        tasks: list[asyncio.Task[None]] = []
        scan = ListEntries()
        t0 = time.perf_counter()

        seen: set[str] = set()
        cut: list[str] = []

        def dispatch(entry: Any) -> None:
            if not isinstance(entry, dict) or len(planned) >= MAX_PLAN_CALLS or cut:
                return
            key = json.dumps(entry, sort_keys=True, default=str)
            if key in seen:  # the plan repeats itself: the model is looping, and what follows is more of it
                cut.append(f"entry {len(planned) + 1} repeats an earlier one")
                if streaming:
                    raise StopGeneration(cut[0])
                return
            seen.add(key)
            index = len(planned) + 1
            item = _Planned(index, str(entry.get("tool", "")), entry.get("args", {}),
                            asyncio.get_running_loop().create_future(), round(time.perf_counter() - t0, 6))
            item.deps = [d for d in _refs(item.args) if d < index]
            planned.append(item)
            tasks.append(asyncio.create_task(self._execute(ctx, item, planned, outcomes, tools)))

        entries: list[Any] = []
        capped: str | None = None

        def on_text(text: str) -> None:
            for entry in scan.feed(text):
                entries.append(entry)
                if streaming:
                    dispatch(entry)

        messages, _ = ctx.render("tools_planner", task=task, tools=_listing(tools))
        try:
            try:
                cap = ctx.token_cap(PLAN_TOKENS)
                await ctx.call(messages, output=plan_schema(tools, max(1, cap // TOKENS_PER_ENTRY)),
                               max_tokens=cap, repetition_penalty=1.0, retrieve=False, on_text=on_text,
                               stage="plan", output_retries=0)  # the entries came in through on_text
            except OutputError:  # the token cap cut the plan: its complete entries still stand
                capped = "the plan reached its token cap"
            plan_s = time.perf_counter() - t0
            if not streaming:
                for entry in entries:
                    dispatch(entry)
            if tasks:
                await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        record["plans"].append({
            "plan_call_s": round(plan_s, 6),
            "cut": cut[0] if cut else capped,
            "calls": [{"tool": p.tool, "args": p.args, "deps": p.deps, "dispatched_s": p.dispatched_s,
                       "error": outcomes[p.index].error if p.index in outcomes else "not run"} for p in planned],
        })
        return planned, outcomes

    async def _execute(self, ctx: AgentContext, item: _Planned, planned: list[_Planned],
                       outcomes: dict[int, ToolOutcome], tools: list[Tool]) -> None:
        """Wait for the results this call names, then run it through the tool path."""
        by_index = {p.index: p for p in planned}
        got = {d: await by_index[d].done for d in item.deps if d in by_index}
        broken = [d for d, o in got.items() if not o.ok]
        if broken:
            outcome = ToolOutcome(f"plan-{item.index}", item.tool,
                                  f"error: not run: it needs call ${broken[0]}, which failed", error="dependency failed")
        else:
            outcome = await ctx.call_tool(ToolCall(item.tool, _fill(item.args, got)), tools)
        outcomes[item.index] = outcome
        item.done.set_result(outcome)

    async def _react(self, ctx: AgentContext, task: str, tools: list[Tool], record: dict[str, Any]) -> str:
        """One tool call per model turn, each result read before the next call."""
        messages, _ = ctx.render("tools_react", task=task)
        asked: set[str] = set()
        record["react_steps"] = 0
        for step in range(1, REACT_STEPS + 1):
            record["react_steps"] = step
            result = await ctx.call(messages, tools=tools, tool_choice="auto", max_tokens=PLAN_TOKENS,
                                    repetition_penalty=1.0, retrieve=False, stage="react", parallel_tool_calls=False)
            if not result.tool_calls:
                return result.text.strip()
            call = result.tool_calls[0]
            key = json.dumps([call.name, call.arguments], sort_keys=True, default=str)
            if key in asked:  # the same call again can only bring the same result: the loop is over
                record["stopped"] = "a call repeated an earlier one"
                break
            asked.add(key)
            outcome = await ctx.call_tool(call, tools)
            messages = [*messages, {"role": "assistant", "content": None, "tool_calls": openai_tool_calls([call])},
                        {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": outcome.content}]
        final = await ctx.call(messages, output=JOIN_SCHEMA, max_tokens=JOIN_TOKENS, repetition_penalty=1.0,
                               retrieve=False, stage="answer")
        return str((final.parsed or {}).get("answer", "")).strip()
