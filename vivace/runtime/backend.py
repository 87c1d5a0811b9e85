"""The one path to a model: the ``Backend`` protocol and its request/result records.

Every LLM call in vivace goes through ``vivace.runtime.call.CallPath``, which
drains ``backend.generate(request)``. Events are ``Delta`` (text as it is produced) and, last, one
``GenerationResult`` that carries the timings the traces are built from.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Protocol, runtime_checkable

from vivace.errors import InputError

if TYPE_CHECKING:
    from vivace.runtime.output import OutputSpec

# A chat turn: role and content, and for tool use an assistant's ``tool_calls`` or a tool's ``tool_call_id``.
Message = dict[str, Any]
_request_ids = itertools.count()


@dataclass
class GenerationRequest:
    """One chat call. ``prefill`` starts the assistant's reply; the model continues it."""

    messages: list[Message]
    prefill: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = False  # benchmarks: fixed output length
    min_tokens: int = 0  # no end (EOS or stop string) before this many tokens: SoT's balanced points
    priority: int = 0  # lower is served first when requests wait (vivace.runtime.priority)
    output: "OutputSpec | None" = None  # decode under this schema, choice set or regex where the backend can
    tag: str = ""
    request_id: str = field(default_factory=lambda: f"vivace-{next(_request_ids)}-{time.monotonic_ns()}")

    def __post_init__(self) -> None:
        if not self.messages:
            raise InputError("a request needs at least one message")
        if self.max_tokens < 1:
            raise InputError(f"max_tokens must be at least 1, got {self.max_tokens}")

    def chat(self) -> list[Message]:
        """The messages with the prefill appended as a final assistant turn to continue."""
        if self.prefill is None:
            return list(self.messages)
        return [*self.messages, {"role": "assistant", "content": self.prefill}]


@dataclass
class Delta:
    """New text from a running generation."""

    text: str
    request_id: str = ""


@dataclass
class GenerationResult:
    """What one call produced and what it cost.

    Times are seconds. ``queue_s`` counts both the in-flight limiter and the
    engine's own queue; ``ttft_s`` and ``e2e_s`` run from submission by the
    caller, so they include the queue. ``cached_tokens`` is None when the
    backend cannot tell.
    """

    text: str
    finish_reason: str
    prompt_tokens: int
    output_tokens: int
    queue_s: float
    ttft_s: float
    e2e_s: float
    cached_tokens: int | None = None
    started_at: float = 0.0
    ended_at: float = 0.0
    tag: str = ""
    request_id: str = ""
    backend: str = ""
    model: str = ""
    # Set by the call path: the reply validated against the call's ``output`` (a model instance, JSON, the
    # text), and the tool calls a reply under tools asked for (``vivace.runtime.tool_path.ToolCall``).
    parsed: Any = None
    tool_calls: list[Any] = field(default_factory=list)

    @property
    def decode_tok_s(self) -> float:
        """Output tokens per second after the first one."""
        decode = self.e2e_s - self.ttft_s
        return (self.output_tokens - 1) / decode if self.output_tokens > 1 and decode > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Event = Delta | GenerationResult


@runtime_checkable
class Backend(Protocol):
    """Anything that serves chat generations: vLLM in-process, HTTP servers, the fake."""

    name: str
    model: str

    def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Yield ``Delta`` events, then exactly one ``GenerationResult``."""
        ...

    async def count_tokens(self, messages: list[Message], prefill: str | None = None) -> int:
        ...

    @property
    def context_length(self) -> int:
        ...

    async def aclose(self) -> None:
        ...


def check_fits(prompt_tokens: int, max_tokens: int, context_length: int) -> None:
    """Refuse a prompt that cannot fit, with its length and the limit."""
    if prompt_tokens >= context_length:
        raise InputError(
            f"prompt is {prompt_tokens} tokens, longer than the model's context of {context_length} tokens"
        )


def apply_stops(text: str, stops: list[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; True when one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class Timer:
    """Monotonic clock for one call, shared by the backends so timings mean the same everywhere."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.started_at = time.time()
        self.first: float | None = None

    def mark_first(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def ttft(self) -> float:
        return (self.first if self.first is not None else time.perf_counter()) - self.t0
