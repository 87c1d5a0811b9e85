"""The one record of what happened: CallTrace per LLM call, RunTrace per run, JSONL on disk.

The CLI's ``--json``, the benchmarks and the reports all read these records;
none of them times anything a second way.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NotRequired, Protocol, TypedDict


class CallResult(Protocol):
    """What ``CallTrace.from_result`` reads from a finished call.

    A protocol, not ``runtime.backend.GenerationResult`` itself: traces sit
    below the runtime, so any backend's result with these attributes will do.
    """

    tag: str
    prompt_tokens: int
    output_tokens: int
    queue_s: float
    ttft_s: float
    e2e_s: float
    cached_tokens: int | None
    started_at: float
    ended_at: float
    finish_reason: str


@dataclass
class CallTrace:
    """One LLM call, as the backend measured it, plus where in the graph it happened."""

    node: str
    branch: int | None
    tag: str
    prompt_tokens: int
    output_tokens: int
    queue_s: float
    ttft_s: float
    e2e_s: float
    cached_tokens: int | None
    started_at: float
    ended_at: float
    finish_reason: str
    agent: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    model: str = ""  # the runtime's name for the model that served it ("default", "int8", ...)
    served_by: str = ""  # what that model is: "backend:served model name", e.g. "vllm:smollm2-135m"

    @classmethod
    def from_result(
        cls, result: CallResult, node: str, branch: int | None = None, agent: str = "", model: str = "", **extra: Any
    ) -> "CallTrace":
        backend, served = getattr(result, "backend", ""), getattr(result, "model", "")
        return cls(
            node=node,
            branch=branch,
            tag=result.tag,
            prompt_tokens=result.prompt_tokens,
            output_tokens=result.output_tokens,
            queue_s=result.queue_s,
            ttft_s=result.ttft_s,
            e2e_s=result.e2e_s,
            cached_tokens=result.cached_tokens,
            started_at=result.started_at,
            ended_at=result.ended_at,
            finish_reason=result.finish_reason,
            agent=agent,
            extra=dict(extra),
            model=model,
            served_by=f"{backend}:{served}" if backend or served else "",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ToolTrace:
    """One tool call, as the tool path ran it: the record a ``CallTrace`` is for a model call.

    ``error`` is what the model was told instead of a result (the run went on);
    ``cache_hit`` is a pure tool's result reused for the same arguments.
    """

    name: str
    call_id: str
    arguments: Any
    started_at: float
    ended_at: float
    seconds: float
    cache_hit: bool = False
    error: str | None = None
    output_chars: int = 0
    truncated: bool = False
    source: str = ""
    agent: str = ""
    node: str = ""
    branch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RouterDecision(TypedDict, total=False):
    """The SoT route a run took: ``mode`` and ``reason`` always; ``load`` when auto weighed the engine's load."""

    mode: str
    reason: str
    load: dict[str, Any]


class SotRecord(TypedDict):
    """What the SoT controller did beyond its route and points (``RunTrace.router``, ``.points``).

    A typed field, not ``meta``: the benches, the fault tests and the docs read it by name.
    """

    requested_mode: str  # auto, sot or normal: what the run asked for
    mode: str | None  # how it answered: sot, or normal (routed there or fallen back); None before the route
    skeleton: str | None  # the skeleton's text, when one was written
    fallback: str | None  # why the skeleton was not expanded (normal decoding instead), or the guard's refusal
    failed_points: dict[int, str]  # point number -> what went wrong
    length_plan: dict[str, Any] | None  # vivace.agents.sot.length_plan: expected tokens, points asked, source
    stages: dict[str, float]  # seconds: route, skeleton, expand, join, total; skeleton_hidden (overlapped)


class ThreadInfo(TypedDict):
    """The conversation a run continued: its id, the earlier turns it got, those left out for the budget."""

    id: str
    turns: int
    dropped: int


class CheckpointInfo(TypedDict):
    """What checkpointing cost a run: the steps it saved, their seconds, the store's kind."""

    steps_saved: int
    save_s: float
    store: str


class StepRecord(TypedDict):
    """One step run as the record keeps it (``StepRun.to_dict``): where it sat, when it ran, what it cost."""

    id: int
    scope: int
    step: str
    agent: str
    branch: int | None
    round: int
    started_at: float
    parent: int | None
    deps: list[int]
    ended_at: float | None
    calls: int
    tool_calls: int
    prompt_tokens: int
    output_tokens: int
    error: str | None
    downstream: int
    extra: dict[str, Any]  # the agent's own data about this step (a writer's long-form plan, ...)
    model: str | None
    sampling: dict[str, Any]
    tools: list[str]
    key: str
    seconds: float


class CallTotals(TypedDict):
    """Calls, tokens, seconds in calls and seconds of those in queues: what the agent and model summaries add up."""

    calls: int
    prompt_tokens: int
    output_tokens: int
    call_s: float
    queue_s: float


class AgentSummary(CallTotals):
    """Per agent of a run: its step runs, the wall time it was active (overlaps once), its totals and models."""

    name: str
    runs: int
    latency_s: float
    models: list[str]


class ModelInfo(TypedDict):
    """What serves a model name (``ModelSet.describe``): the rest only once it was opened; weights for an engine."""

    name: str
    opened: NotRequired[bool]
    backend: NotRequired[str]
    model: NotRequired[str]
    weights: NotRequired[str]
    dtype: NotRequired[str]
    quantization: NotRequired[str | None]
    kv_cache_dtype: NotRequired[str]
    compiled: NotRequired[bool]
    base_urls: NotRequired[list[str]]


class ModelSummary(ModelInfo, CallTotals):
    """Per model that served a call: what it is, who served it, its totals, the agents that used it."""

    served_by: str
    agents: list[str]


@dataclass
class RunTrace:
    """One run of a question or task through vivace: what the run driver measured, typed.

    Everything the driver records is a field, and so is SoT's record
    (``router``, ``points``, ``sot``); ``meta`` holds what is particular to one
    other agent (the tools agent's plans, a plug-in's own data), and for now a
    paused run's ``pending_approval`` and a resumed run's ``resumed_from`` and
    ``resumed_steps``.
    """

    question: str
    mode: str
    model: str
    backend: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: float = field(default_factory=time.time)
    latency_s: float = 0.0
    answer: str = ""
    error: str | None = None
    status: str = "done"  # or "failed", "interrupted": a record is written whatever happened
    calls: list[CallTrace] = field(default_factory=list)
    tools: list[ToolTrace] = field(default_factory=list)
    agent: str = ""  # what ran: a registry name or a pipeline's name
    steps: list[StepRecord] = field(default_factory=list)  # every step run (``StepRun.to_dict``), in start order
    agents: list[AgentSummary] = field(default_factory=list)  # per agent: runs, wall time, calls, tokens, models
    models: list[ModelSummary] = field(default_factory=list)  # per model: what it is, calls, tokens, agents
    critical_path_s: float = 0.0  # the longest dependent chain of steps
    critical_path: list[int] = field(default_factory=list)  # the ids of ``steps`` on it, first to last
    parallelism: float = 0.0  # seconds in calls over wall seconds: calls in flight on average
    router: RouterDecision | None = None  # the SoT route decision, when the run had one
    points: list[str] = field(default_factory=list)  # the SoT skeleton's points, when it had them
    sot: SotRecord | None = None  # the rest of what the SoT controller did, when the run had it
    messages: list[dict[str, Any]] = field(default_factory=list)  # the pipeline's transcript: each step's output
    thread: ThreadInfo | None = None  # the conversation the run continued, when it named one
    checkpoint: CheckpointInfo | None = None  # what saving its steps cost, when checkpoints were on
    approval_wait_s: float = 0.0  # seconds waiting for a person's approval, inside ``latency_s``
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_tokens(self) -> int:
        return sum(c.prompt_tokens for c in self.calls)

    @property
    def output_tokens(self) -> int:
        return sum(c.output_tokens for c in self.calls)

    @property
    def ttft_s(self) -> float | None:
        """Time from the run's start to the first token of its first call."""
        if not self.calls:
            return None
        first = min(self.calls, key=lambda c: c.started_at)
        return max(0.0, first.started_at - self.started_at) + first.ttft_s

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(prompt_tokens=self.prompt_tokens, output_tokens=self.output_tokens, ttft_s=self.ttft_s)
        return data


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record; a line at a time so a crash loses at most the run in progress."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str) + "\n")


def save_run(record: dict[str, Any], runs_dir: Path, extra: str | Path | None = None) -> None:
    """Every run goes to ``runs_dir/runs.jsonl``, and also to the user's ``--trace-out`` file."""
    append_jsonl(runs_dir / "runs.jsonl", record)
    if extra:
        append_jsonl(Path(extra), record)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def estimate_normal_s(trace: Any) -> tuple[float | None, str]:
    """Estimated latency of normal decoding for a finished SoT run, from its own traces.

    Normal decoding would produce about as many tokens as all SoT calls
    together, one after another, at the single-stream rate the skeleton call
    measured (it runs alone), after about the skeleton's TTFT. An estimate,
    labelled as one: ``--compare`` measures a normal run instead.
    """
    calls = getattr(trace, "calls", [])
    skeleton = next((c for c in calls if c.node == "skeleton"), None)
    if skeleton is None or len(calls) < 2:
        return None, "no SoT calls to estimate from"
    decode_s = skeleton.e2e_s - skeleton.ttft_s - skeleton.queue_s
    if skeleton.output_tokens < 2 or decode_s <= 0:
        return None, "the skeleton call was too short to measure a rate"
    rate = (skeleton.output_tokens - 1) / decode_s
    tokens = sum(c.output_tokens for c in calls)
    return skeleton.ttft_s + tokens / rate, f"estimate: {tokens} tokens at the skeleton's {rate:.1f} tok/s, after its TTFT"
