"""The one event vocabulary of a run: its start and finish, its steps, and the SoT controller's stages.

The run driver announces every run (``RunStarted``) and ends it
(``RunFinished``), whatever runs inside. Every runnable (an agent, a pipeline,
the SoT controller) streams its events to the driver's ``on_event``, so a plain
terminal, the live view, the TUI and tests all watch any run the same way.
SoT's stage events are step events: each carries the ``step`` it belongs to
(``sot`` when the controller is the whole run). Events that end an LLM call
carry its ``CallTrace``: a consumer that saw the events has every trace even
when the run later fails.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from vivace.trace import CallTrace, ToolTrace


@dataclass
class Event:
    """Base of all controller events; ``kind`` names the type in JSON."""

    kind: ClassVar[str] = "event"
    run_id: str
    t: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    def stream(self) -> tuple[str, Any] | None:
        """The text stream this event adds to (a name and a branch), or None: a run keeps these as its partial answer.

        A method, not attribute probes by the tracer: it runs once per streamed token.
        """
        return None


@dataclass
class RunStarted(Event):
    """The driver began a run of ``agent`` (a registry name or a pipeline) on ``question``."""

    kind: ClassVar[str] = "run_started"
    question: str
    agent: str
    resumed_from: str | None = None


@dataclass
class RunFinished(Event):
    """The run ended: ``status`` is done, failed, interrupted or paused; its record is saved by now."""

    kind: ClassVar[str] = "run_finished"
    status: str
    answer: str
    latency_s: float
    error: str | None = None


@dataclass
class StepEvent(Event):
    """A SoT stage event: ``step`` is the pipeline step whose controller sent it (its emitter sets it)."""

    step: str = field(default="sot", kw_only=True)


@dataclass
class Routed(StepEvent):
    """The mode the step takes and why (the router's decision, or the user's request)."""

    kind: ClassVar[str] = "routed"
    mode: str
    reason: str
    load: dict[str, Any] | None = None  # the load the decision saw, when auto is load-aware (vivace.agents.sot.load)
    requested_mode: str = "auto"


@dataclass
class SkeletonDelta(StepEvent):
    kind: ClassVar[str] = "skeleton_delta"
    text: str

    def stream(self) -> tuple[str, Any] | None:
        return (self.kind, None)


@dataclass
class SkeletonDone(StepEvent):
    """The parsed points; ``fallback`` says why the run goes to normal decoding instead.

    ``call`` is None when the skeleton was taken from a checkpoint (a resumed run did not call for it).
    """

    kind: ClassVar[str] = "skeleton_done"
    points: list[str]
    text: str
    fallback: str | None
    call: CallTrace | None


@dataclass
class BranchDelta(StepEvent):
    """New text of point ``index`` (1-based, in skeleton order)."""

    kind: ClassVar[str] = "branch_delta"
    index: int
    text: str

    def stream(self) -> tuple[str, Any] | None:
        return (self.kind, self.index)


@dataclass
class BranchDone(StepEvent):
    """A point's expansion, cleaned; ``error`` is set (and ``call`` may be None) when it failed."""

    kind: ClassVar[str] = "branch_done"
    index: int
    point: str
    text: str
    call: CallTrace | None
    error: str | None = None


@dataclass
class AnswerDelta(StepEvent):
    """New text of a normal-decoding answer."""

    kind: ClassVar[str] = "answer_delta"
    text: str

    def stream(self) -> tuple[str, Any] | None:
        return (self.kind, None)


@dataclass
class AnswerDone(StepEvent):
    """The final answer; ``call`` is the normal-decoding call when there was one."""

    kind: ClassVar[str] = "answer_done"
    answer: str
    mode: str
    points: list[str]
    call: CallTrace | None = None


@dataclass
class ErrorEvent(StepEvent):
    """A failure in ``node`` (and ``branch`` for a point expansion)."""

    kind: ClassVar[str] = "error"
    node: str
    message: str
    branch: int | None = None


@dataclass
class AgentStarted(Event):
    """A pipeline step (one branch of a fan-out counts as one) began; ``round`` counts revisions."""

    kind: ClassVar[str] = "agent_started"
    step: str
    agent: str
    branch: int | None = None
    round: int = 0


@dataclass
class AgentDelta(Event):
    """New text from a step's model call."""

    kind: ClassVar[str] = "agent_delta"
    step: str
    agent: str
    text: str
    branch: int | None = None
    request_id: str = ""

    def stream(self) -> tuple[str, Any] | None:
        return (self.step, self.branch)


@dataclass
class AgentDone(Event):
    kind: ClassVar[str] = "agent_done"
    step: str
    agent: str
    output: str
    seconds: float
    calls: int
    output_tokens: int
    branch: int | None = None
    round: int = 0


@dataclass
class AgentFailed(Event):
    kind: ClassVar[str] = "agent_failed"
    step: str
    agent: str
    message: str
    branch: int | None = None


@dataclass
class ToolStarted(Event):
    """A tool call began (from a step, or a model's tool call)."""

    kind: ClassVar[str] = "tool_started"
    step: str
    agent: str
    name: str
    call_id: str
    arguments: Any = None
    branch: int | None = None


@dataclass
class ToolDone(Event):
    """A tool call ended: ``trace`` is its record (``error`` set when the model was told of a failure)."""

    kind: ClassVar[str] = "tool_done"
    step: str
    agent: str
    name: str
    call_id: str
    seconds: float
    error: str | None
    cache_hit: bool
    trace: ToolTrace
    branch: int | None = None


EVENT_TYPES: tuple[type[Event], ...] = (
    RunStarted,
    RunFinished,
    Routed,
    SkeletonDelta,
    SkeletonDone,
    BranchDelta,
    BranchDone,
    AnswerDelta,
    AnswerDone,
    ErrorEvent,
    AgentStarted,
    AgentDelta,
    AgentDone,
    AgentFailed,
    ToolStarted,
    ToolDone,
)
