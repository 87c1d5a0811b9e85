"""The one call path: every model call in vivace is ``CallPath.__call__``.

Why one place: the efficiency decisions that belong to a single call (what
context to retrieve for it, whether compressing its prompt pays) must be
made, timed and recorded the same way for the SoT skeleton, each point, every
agent, pipeline history and the benches. The call path asks its context
policy (filled in by ``vivace.assembly``), sends the request, streams text to
the caller, and returns the backend's result with one ``CallTrace`` that
carries the decision under ``extra["context"]``. The run it belongs to (its
collection, its compression mode, where its calls are recorded) travels in a
context variable, so agents never pass it by hand.
"""

from __future__ import annotations

import contextvars
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, AsyncGenerator, Callable, Protocol, Sequence, cast

from vivace.choices import Compression, values
from vivace.errors import BackendError, OutputError
from vivace.runtime.backend import Backend, Event, GenerationRequest, GenerationResult, Message, Timer
from vivace.runtime.output import DEFAULT_MAX_STRING, OutputInvalid, OutputSpec, output_spec
from vivace.runtime.priority import priority
from vivace.runtime.model_set import ModelSet
from vivace.runtime.tool_calls import (
    MAX_ARGUMENT_STRING,
    ToolChoice,
    needs_plain,
    parse_reply,
    plain_messages,
    reply_spec,
    specs,
    tool_prompt,
)
from vivace.trace import CallTrace, ToolTrace

log = logging.getLogger(__name__)

COMPRESSION_MODES = values(Compression)


class StopGeneration(Exception):
    """Raised by a call's text listener: the caller has what it needs, so the rest is not generated.

    The call ends with ``finish_reason="cut"`` and its trace like any other
    (the ``tools`` agent cuts a plan that starts repeating itself).
    """


@dataclass
class Call:
    """One model call as its caller asks for it, before the context policy has its say.

    ``None`` sampling fields take the call path's defaults (the config's).
    ``model`` names one of the runtime's models (``None``: ``default``).
    ``query`` is what retrieval looks for (default: the last user message);
    ``compressible`` names texts inside the messages that the policy may
    compress, such as the history a pipeline hands an agent; ``retrieve=False``
    keeps retrieval out of a call that must see its prompt as written.

    ``output`` is what the reply must be (a pydantic model, a JSON schema, a
    list of choices, a regex): decoded under it where the backend can, always
    validated, retried once with the error; the value is ``result.parsed``.
    ``tools`` (``Tool`` objects or OpenAI tool entries) are offered to the
    model under ``tool_choice``; the calls it asks for are ``result.tool_calls``
    (the caller runs them through the tool path).
    """

    messages: list[Message]
    prefill: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    stop: Sequence[str] = ()
    seed: int | None = None
    top_p: float | None = None
    model: str | None = None
    ignore_eos: bool = False
    min_tokens: int | None = None
    node: str = "call"
    agent: str = ""
    branch: int | None = None
    round: int = 0
    query: str | None = None
    compressible: tuple[str, ...] = ()
    retrieve: bool = True
    downstream: int = 0  # calls or steps that wait for this one: the priority's place in the program
    tag: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    tools: Sequence[Any] = ()
    tool_choice: Any = None
    parallel_tool_calls: bool = True
    output_retries: int = 1  # asks again after an invalid reply (0: the caller uses what came, e.g. a cut plan)
    conversation: bool = True  # the run's earlier turns (a thread's) go before this call's own messages

    def text(self) -> str:
        """Everything the model will read, for "does the prompt already hold this?" checks."""
        return "\n".join([*(m["content"] for m in self.messages), self.prefill or ""])

    def last_user(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")

    def shaped(self, max_tokens: int = 512) -> tuple["Call", OutputSpec | None]:
        """The call as every backend can send it, and the spec its reply is decoded under and checked against.

        Tools join the system message and set the reply's schema, with no more
        calls than ``max_tokens`` has room for; tool turns in the history
        become plain text turns (``vivace.runtime.tool_calls``). Strings the
        schema leaves unbounded get a bound that ``max_tokens`` fits (about two
        characters a token): under a grammar, running out of tokens is the one
        way a reply can break its schema.
        """
        room = max(16, 2 * max_tokens)
        spec = output_spec(self.output, min(DEFAULT_MAX_STRING, room)) if self.output is not None else None
        prompt = None
        if self.tools:
            offered, choice = specs(self.tools), ToolChoice.parse(self.tool_choice)
            spec = reply_spec(offered, choice, self.parallel_tool_calls, max_string=min(MAX_ARGUMENT_STRING, room),
                              max_tokens=max_tokens) or spec
            prompt = tool_prompt(offered, choice, self.parallel_tool_calls)
        if prompt is None and not needs_plain(self.messages):
            return self, spec
        return replace(self, messages=plain_messages(self.messages, prompt)), spec


@dataclass
class Scope:
    """What one run tells the call path. Set by the run driver; calls outside a run get the default."""

    run_id: str = ""
    collection: str | None = None
    compression: str = "auto"
    history_budget_tokens: int = 1024
    record: Callable[[CallTrace], None] | None = None
    record_tool: Callable[[ToolTrace], None] | None = None  # the tool path's record of each tool call
    tool_started: Callable[[Any], None] | None = None  # a tool call began (the live view shows it)
    memo: dict[str, Any] = field(default_factory=dict)  # the policy's per-run state
    attained_tokens: int = 0  # tokens this run's finished calls cost the engine: its attained service
    started_ms: int = field(default_factory=lambda: int(time.monotonic() * 1000))  # the run's age, for ``age``
    conversation: tuple[Message, ...] = ()  # a thread's earlier turns, within the history budget


def with_conversation(call: Call, turns: Sequence[Message]) -> Call:
    """``call`` with the earlier turns after its system messages; the policy may compress the long ones."""
    if not turns or not call.conversation:
        return call
    head = 0
    while head < len(call.messages) and call.messages[head]["role"] in ("system", "developer"):
        head += 1
    texts = tuple(str(m["content"]) for m in turns if len(str(m.get("content") or "")) > 200)
    return replace(call, messages=[*call.messages[:head], *turns, *call.messages[head:]],
                   compressible=(*call.compressible, *texts))


_SCOPE: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("vivace_scope", default=None)


def current_scope() -> Scope | None:
    return _SCOPE.get()


def enter_scope(scope: Scope) -> contextvars.Token[Scope | None]:
    """Make ``scope`` the run of this task (asyncio tasks it starts, LangGraph branches too, inherit it)."""
    return _SCOPE.set(scope)


def leave_scope(token: contextvars.Token[Scope | None]) -> None:
    _SCOPE.reset(token)


class ContextPolicy(Protocol):
    """Decides, per call, what context the prompt gets and whether compressing it pays.

    Returns the call to send (messages may be rewritten) and the decision
    record for the trace: retrieved chunks, compression method or why it was
    skipped, tokens before and after, predicted and actual seconds.
    """

    async def prepare(self, call: Call, scope: Scope, backend: Backend) -> tuple[Call, dict[str, Any]]:
        ...


class NoContext:
    """The policy when none is plugged in: the prompt goes as written."""

    async def prepare(self, call: Call, scope: Scope, backend: Backend) -> tuple[Call, dict[str, Any]]:
        return call, {"retrieved": 0, "compressed": False, "reason": "no context policy"}


@dataclass
class Defaults:
    """Sampling the config sets for every call that does not choose its own."""

    max_tokens: int = 512
    temperature: float = 0.0
    repetition_penalty: float = 1.0
    scheduling: str = "fcfs"  # vivace.runtime.priority.SCHEDULING


class CallPath:
    """Model choice, context decision, request, stream, one trace: the only place vivace calls a model.

    ``backend`` is the default model; ``models`` holds it and the other named
    models, and each call goes to the one its ``Call.model`` names.
    """

    def __init__(self, backend: Backend, policy: ContextPolicy | None = None, defaults: Defaults | None = None,
                 models: ModelSet | None = None) -> None:
        self.backend = backend
        self.policy: ContextPolicy = policy or NoContext()
        self.defaults = defaults or Defaults()
        self.models = models or ModelSet(backend)

    async def __call__(
        self, call: Call, on_text: Callable[[str], None] | None = None, scope: Scope | None = None
    ) -> tuple[GenerationResult, CallTrace]:
        """Run ``call`` to the end, passing text to ``on_text`` as it arrives.

        The trace is also handed to the run's recorder, so a run keeps every
        call even when the caller later fails.
        """
        scope = scope or current_scope() or Scope()
        model = self.models.check(call.model)
        backend = await self.models.get(model)  # a named model starts on its first call, once
        call, spec = call.shaped(call.max_tokens or self.defaults.max_tokens)
        call = with_conversation(call, scope.conversation)
        t0 = time.perf_counter()
        sent, decision = await self.policy.prepare(call, scope, backend)
        decision.setdefault("seconds", round(time.perf_counter() - t0, 6))
        request = replace(self.request(sent, scope), output=spec)
        for attempt in range(1, call.output_retries + 2):
            result = await self.send(request, on_text, backend)
            scope.attained_tokens += result.prompt_tokens - (result.cached_tokens or 0) + result.output_tokens
            checked = self._check(result, spec, attempt)
            trace = CallTrace.from_result(result, node=call.node, branch=call.branch, agent=call.agent, model=model,
                                          round=call.round, context=decision, priority=request.priority,
                                          **call.extra, **checked)
            if scope.record is not None:
                scope.record(trace)
            if spec is None or checked["output"]["valid"] or result.finish_reason == "cut":
                return result, trace
            if attempt > call.output_retries:
                times = "twice" if attempt == 2 else f"{attempt} times" if attempt > 2 else "and was not retried"
                raise OutputError(f"{call.node}: the model's reply broke its output schema {times} "
                                  f"({checked['output']['error']})")
            # One retry, told what was wrong: the reply as it came, then the error and what is expected.
            retry = [*request.messages, {"role": "assistant", "content": (request.prefill or "") + result.text},
                     {"role": "user", "content": f"That reply is invalid: {checked['output']['error']}. "
                                                 f"Reply again with {spec.describe()}"}]
            # A reply cut by the token cap gets room to close its JSON this time.
            tokens = request.max_tokens * (2 if result.finish_reason == "length" else 1)
            request = replace(request, messages=retry, prefill=None, max_tokens=tokens,
                              request_id=f"{request.request_id}-retry")
        raise AssertionError("unreachable")

    @staticmethod
    def _check(result: GenerationResult, spec: OutputSpec | None, attempt: int) -> dict[str, Any]:
        """Validate the reply against ``spec``: ``result.parsed`` (and tool calls) set, the check for the record."""
        if spec is None:
            return {}
        try:
            result.parsed = spec.validate(result.text)
        except OutputInvalid as exc:
            return {"output": {"kind": spec.kind, "valid": False, "error": str(exc), "attempt": attempt,
                               "finish_reason": result.finish_reason}}
        if spec.tool_reply:
            content, result.tool_calls = parse_reply(result.parsed)
            result.text = content or ""
        return {"output": {"kind": spec.kind, "valid": True, "attempt": attempt,
                           "tool_calls": [c.name for c in result.tool_calls]}}

    async def send(self, request: GenerationRequest, on_text: Callable[[str], None] | None = None,
                   backend: Backend | None = None) -> GenerationResult:
        """The one loop that drains a backend's stream (default: the default model's): text to ``on_text``."""
        result: GenerationResult | None = None
        backend = backend or self.backend
        timer, parts = Timer(), []
        stream = backend.generate(request)
        try:
            async for event in stream:
                if isinstance(event, GenerationResult):
                    result = event
                elif event.text:
                    timer.mark_first()
                    parts.append(event.text)
                    if on_text is not None:
                        on_text(event.text)
        except StopGeneration:  # the listener has what it needs: the rest is not generated, the call still counts
            # the backend aborts the request (at the engine, or by closing the stream); every generate is an async generator
            await cast(AsyncGenerator[Event, None], stream).aclose()
            elapsed = timer.elapsed
            return GenerationResult(
                text="".join(parts), finish_reason="cut",
                prompt_tokens=await backend.count_tokens(request.messages, request.prefill),
                output_tokens=len(parts),  # one streamed piece per decode step: the engine's tokens, near enough
                queue_s=0.0, ttft_s=timer.ttft, e2e_s=elapsed, started_at=timer.started_at,
                ended_at=timer.started_at + elapsed, tag=request.tag, request_id=request.request_id,
                backend=backend.name, model=backend.model)
        if result is None:
            raise BackendError(f"{backend.name}: generation {request.tag!r} ended without a result")
        return result

    def request(self, call: Call, scope: Scope) -> GenerationRequest:
        d = self.defaults
        tag = call.tag or "/".join(p for p in (scope.run_id, call.node, "" if call.branch is None else str(call.branch)) if p)
        return GenerationRequest(
            messages=call.messages,
            prefill=call.prefill,
            max_tokens=call.max_tokens or d.max_tokens,
            temperature=d.temperature if call.temperature is None else call.temperature,
            repetition_penalty=d.repetition_penalty if call.repetition_penalty is None else call.repetition_penalty,
            top_p=1.0 if call.top_p is None else call.top_p,
            stop=list(call.stop),
            seed=call.seed,
            ignore_eos=call.ignore_eos,
            min_tokens=min(call.min_tokens or 0, call.max_tokens or d.max_tokens),
            priority=priority(d.scheduling, call.downstream, scope.attained_tokens, scope.started_ms),
            tag=tag,
        )

    def with_policy(self, policy: ContextPolicy) -> "CallPath":
        """The same models and defaults with another policy (benches compare policies side by side)."""
        return CallPath(self.backend, policy, replace(self.defaults), self.models)


async def complete(backend: Backend, call: Call | GenerationRequest) -> GenerationResult:
    """A call sent as written, to the end: for measurements, which want no context policy and no run.

    A ``GenerationRequest`` is replayed exactly (the overhead bench re-sends the requests a run made).
    """
    path = CallPath(backend)
    return await path.send(call if isinstance(call, GenerationRequest) else path.request(call, Scope()))
