"""How busy the model is right now: one snapshot from the in-flight limiter and the backend.

Why a module: a decision that adds requests (SoT's fan-out) pays only while
the engine's batch has room. The limiter knows what this process has in
flight and queued; an in-process engine also knows its running and waiting
requests and its KV-cache use (``EngineStats``); an endpoint or the fake
knows neither, so they give what the limiter gives. ``claims`` closes the
gap between a run deciding to fan out and its requests reaching the limiter:
runs that decide at the same moment would otherwise all see an empty batch.
``runs`` counts the runs that share the batch right now (the run driver counts
every run, a pipeline's as well as a SoT answer's), so each can be held
to its share of it.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any, ContextManager, Iterator

log = logging.getLogger(__name__)

__all__ = ["Claim", "Ledger", "Load", "StepModel", "ledger_of", "read_load"]


@dataclass(frozen=True)
class Load:
    """One reading. ``capacity`` is the number of requests that can decode in one batch at once."""

    in_flight: int
    waiting: int
    claimed: int
    capacity: int
    runs: int = 1  # runs sharing the batch now (this one included), as the ledger counts them
    engine_running: int | None = None
    engine_waiting: int | None = None
    kv_usage: float | None = None
    kv_free_slots: int | None = None
    knee: int | None = None  # the engine's measured batch knee (StepModel), part of ``capacity`` when known
    batch: int | None = None  # ``capacity`` without the knee: what the limiter and the engine admit at once

    @property
    def idle(self) -> bool:
        """Nothing else in flight, waiting or claimed, and no other run sharing the batch."""
        return self.busy == 0 and self.runs <= 1

    @property
    def free_alone(self) -> int:
        """The slots a lone run on an idle batch may use: the knee does not bind it.

        Past the knee a step costs more than the fixed part it shares, but a lone
        answer split into more points still finishes sooner (under the step
        model, its time is ``tokens * (fixed / points + per_seq)``); the knee
        protects other runs' steps, and there are none.
        """
        return self._kv_bound(self.batch if self.batch is not None else self.capacity)

    @property
    def busy(self) -> int:
        """Requests holding or waiting for a batch slot, and slots runs have claimed but not yet used.

        Every request of this process passes the limiter, so its counts are the
        live ones; the engine's running/waiting come from its last logged step
        (stale once it idles) and are kept beside them for the record.
        """
        return self.in_flight + self.waiting + self.claimed

    @property
    def free(self) -> int:
        """Batch slots a new request would find: by count, and by KV headroom when the engine reports it."""
        return self._kv_bound(max(0, self.capacity - self.busy))

    def _kv_bound(self, slots: int) -> int:
        """``slots``, no more than the free KV cache holds when the engine reports it."""
        return min(slots, self.kv_free_slots) if self.kv_free_slots is not None else slots

    @property
    def share(self) -> int:
        """One run's fair share of the batch: the slots divided among the runs sharing it."""
        return self.capacity // max(1, self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "busy": self.busy, "free": self.free, "share": self.share}


class Claim:
    """Slots a run has decided to use and not yet put in flight; released as its requests start."""

    def __init__(self, ledger: "Ledger", slots: int) -> None:
        self._ledger = ledger
        self.slots = slots

    def release(self, n: int = 1) -> None:
        n = min(n, self.slots)
        self.slots -= n
        self._ledger.claimed -= n

    def close(self) -> None:
        """Release what is left (the run ended, failed, or used fewer slots than it claimed)."""
        self.release(self.slots)


class Ledger:
    """The process-wide count of claimed slots and runs sharing the batch; one per limiter (``ledger_of``)."""

    def __init__(self) -> None:
        self.claimed = 0
        self.runs = 0

    def claim(self, slots: int) -> Claim:
        slots = max(0, slots)
        self.claimed += slots
        return Claim(self, slots)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Count one run as sharing the batch while the block runs."""
        self.runs += 1
        try:
            yield
        finally:
            self.runs -= 1


def sharing(runtime: Any) -> ContextManager[None]:
    """Count a run as sharing the batch while it runs (its share shrinks the others'): the run driver's, for every run."""
    ledger = ledger_of(getattr(runtime, "limiter", None))
    return ledger.running() if ledger else nullcontext()


def ledger_of(limiter: Any) -> Ledger | None:
    """The limiter's ledger, made on first use: the limiter is the one object every run of a process shares."""
    if limiter is None:
        return None
    ledger = getattr(limiter, "ledger", None)
    if not isinstance(ledger, Ledger):
        ledger = limiter.ledger = Ledger()
    return ledger


def engine_batch_size(backend: Any) -> int | None:
    """The engine's own cap on sequences per batch (vLLM ``max_num_seqs``), when the backend is an engine."""
    options = getattr(backend, "options", None)
    value = getattr(options, "max_num_seqs", None)
    return value if isinstance(value, int) and value > 0 else None


def kv_free_slots(stats: Any, backend: Any, request_tokens: int) -> int | None:
    """How many more requests of ``request_tokens`` tokens the free KV cache holds, when the engine says."""
    usage = getattr(stats, "kv_cache_usage", None)
    size = getattr(backend, "kv_capacity_tokens", None)
    if not isinstance(usage, (int, float)) or not isinstance(size, int) or size <= 0 or request_tokens <= 0:
        return None
    return max(0, math.floor((1.0 - float(usage)) * size / request_tokens))


def read_load(limiter: Any, backend: Any, request_tokens: int = 0) -> Load:
    """The current load as the limiter and the backend see it.

    ``capacity`` is the smallest of the limiter's cap, the engine's batch
    size and the engine's measured knee: past the first, requests queue in
    the limiter; past the second, in the engine's scheduler; past the third,
    they slow every step more than batching saves. ``request_tokens`` (prompt plus budget of the
    requests about to be added) turns KV headroom into slots.
    """
    stats = getattr(backend, "stats", None)
    steps = getattr(stats, "steps", None)
    knee = steps.knee() if isinstance(steps, StepModel) else None
    hard = [c for c in (getattr(limiter, "max_in_flight", None), engine_batch_size(backend)) if c]
    caps = hard + ([knee] if knee else [])
    running = getattr(stats, "running", None)
    waiting = getattr(stats, "waiting", None)
    usage = getattr(stats, "kv_cache_usage", None)
    return Load(
        in_flight=int(getattr(limiter, "in_flight", 0)),
        waiting=int(getattr(limiter, "waiting", 0)),
        claimed=ledger.claimed if (ledger := ledger_of(limiter)) else 0,
        capacity=min(caps) if caps else 1,
        batch=min(hard) if hard else None,
        runs=max(1, ledger.runs) if ledger else 1,
        engine_running=running if isinstance(running, int) else None,
        engine_waiting=waiting if isinstance(waiting, int) else None,
        kv_usage=float(usage) if isinstance(usage, (int, float)) else None,
        kv_free_slots=kv_free_slots(stats, backend, request_tokens),
        knee=knee,
    )


class StepModel:
    """Decode step time against batch size, learned from the engine's own steps: ``t(b) = fixed + per_seq * b``.

    Why: how many sequences a batch takes before it is "full" depends on the
    machine, not on ``max_num_seqs``: a GPU decodes hundreds side by side at
    nearly the cost of one, two shared CPU cores a handful. The engine's
    inter-token latencies at each batch size (an exponential average per
    size, so old sizes are kept and recent steps count most) give the line;
    its ``knee`` is the batch at which a step takes twice as long as with one
    sequence: past it, a sequence added costs more step time than the fixed
    part every sequence shares.
    """

    DECAY = 0.9  # weight of the old average per new step of the same batch size

    def __init__(self) -> None:
        self.itl: dict[int, float] = {}

    def add(self, batch: int, seconds: float) -> None:
        if batch < 1 or not seconds > 0:
            return
        old = self.itl.get(batch)
        self.itl[batch] = seconds if old is None else self.DECAY * old + (1 - self.DECAY) * seconds

    def fit(self) -> tuple[float, float] | None:
        """(fixed, per_seq) seconds by least squares over the batch sizes seen; None before two sizes."""
        if len(self.itl) < 2:
            return None
        xs, ys = list(self.itl), list(self.itl.values())
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        per_seq = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        return my - per_seq * mx, per_seq

    def knee(self) -> int | None:
        """The batch size at which a step takes twice as long as with one sequence (``t(b) = 2 t(1)``).

        None when unknown (fewer than two batch sizes seen) or when steps do not
        grow with the batch (parallelism is free as far as the engine has seen).
        """
        line = self.fit()
        if line is None or line[1] <= 0:
            return None
        return math.floor(max(0.0, line[0]) / line[1]) + 2
