"""The cost model: compress only when the prefill time saved exceeds the compression's cost.

Why it exists: on this machine a 135M scorer costs about as much per token
as the engine's prefill, so token-level pruning cannot pay, while MiniLM
sentence selection can on long prompts; on a big GPU model the balance moves.
So both sides are measured once per backend and model, on the real backend
(TTFT of 1-token generations at three prompt lengths, fitted as
``a + b n + c n^2``) and on the real compressors, and cached as JSON under
``$VIVACE_HOME/cost_models.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vivace.choices import CompressionMethod, values
from vivace.runtime.backend import Backend
from vivace.runtime.call import Call, complete

log = logging.getLogger(__name__)

CACHE_FILE = "cost_models.json"
PLANS = tuple(m for m in values(CompressionMethod) if m != CompressionMethod.AUTO)  # what auto chooses among
_WORDS = (
    "river stone lantern market harbor meadow copper violet engine orchard signal winter garden "
    "ledger candle quarry beacon willow thunder canvas mirror saddle pepper falcon timber velvet"
).split()


@dataclass
class Decision:
    """What the cost model chose for one call, with the figures it chose by."""

    compress: bool
    method: str
    original_tokens: int
    target_tokens: int
    predicted_saving_s: float
    predicted_cost_s: float
    reason: str
    mode: str = "auto"
    actual_s: float | None = None
    compressed_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class CostModel:
    """Seconds as functions of tokens; ``None`` throughput means "not measured, not a candidate"."""

    key: str
    prefill: tuple[float, float, float]  # a, b, c of a + b n + c n^2 seconds
    coarse: tuple[float, float] | None = None  # base seconds, seconds per token
    fine: tuple[float, float] | None = None
    measured_at: float = field(default_factory=time.time)
    samples: dict[str, list[list[float]]] = field(default_factory=dict)

    @classmethod
    def from_throughputs(
        cls, prefill_tok_s: float, coarse_tok_s: float | None = None, fine_tok_s: float | None = None, key: str = "given"
    ) -> "CostModel":
        """A linear model from tokens-per-second figures (for tests and what-if planning)."""
        return cls(
            key,
            (0.0, 1.0 / prefill_tok_s, 0.0),
            (0.0, 1.0 / coarse_tok_s) if coarse_tok_s else None,
            (0.0, 1.0 / fine_tok_s) if fine_tok_s else None,
        )

    def prefill_s(self, tokens: int) -> float:
        a, b, c = self.prefill
        return a + b * tokens + c * tokens * tokens

    def stage_s(self, stage: str, tokens: int) -> float | None:
        coeffs = {"coarse": self.coarse, "fine": self.fine}.get(stage)
        return None if coeffs is None else coeffs[0] + coeffs[1] * tokens

    def plan_s(self, plan: str, original: int, target: int) -> float | None:
        """Predicted compression seconds; coarse+fine coarsens to 2x the target first (LongLLMLingua)."""
        if plan == "coarse+fine":
            mid = min(original, 2 * target)
            c, f = self.stage_s("coarse", original), self.stage_s("fine", mid)
            return None if c is None or f is None else c + f
        return self.stage_s(plan, original)

    def decide(
        self, original: int, target: int, mode: str = "auto", margin_s: float = 0.05, plans: tuple[str, ...] = PLANS
    ) -> Decision:
        """The cheapest plan reaching ``target``; in auto mode only if saving > cost + margin."""
        saving = max(0.0, self.prefill_s(original) - self.prefill_s(target))
        if mode == "off":
            return Decision(False, "none", original, original, 0.0, 0.0, "compression is off", mode)
        if original <= target:
            return Decision(False, "none", original, original, 0.0, 0.0, "already within budget", mode)
        costs = {p: c for p in plans if (c := self.plan_s(p, original, target)) is not None}
        if not costs:
            return Decision(False, "none", original, original, saving, 0.0, "no measured compressor", mode)
        plan = min(costs, key=costs.__getitem__)
        cost = costs[plan]
        if mode == "always":
            return Decision(True, plan, original, target, saving, cost, "mode always", mode)
        if saving > cost + margin_s:
            return Decision(True, plan, original, target, saving, cost, f"saves {saving:.3f}s > {cost:.3f}s + {margin_s}s", mode)
        return Decision(False, "none", original, original, saving, cost, f"saves {saving:.3f}s <= {cost:.3f}s + {margin_s}s", mode)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CostModel":
        return cls(
            data["key"],
            tuple(data["prefill"]),
            tuple(data["coarse"]) if data.get("coarse") else None,
            tuple(data["fine"]) if data.get("fine") else None,
            data.get("measured_at", 0.0),
            data.get("samples", {}),
        )


def backend_key(backend: Backend) -> str:
    inner = getattr(backend, "inner", backend)
    opts = getattr(inner, "options", None)
    extra = f":{opts.dtype}:{opts.quantization}:{opts.kv_cache_dtype}" if opts is not None else ""
    return f"{backend.name}:{backend.model}:{backend.context_length}{extra}"


def fit_quadratic(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Least squares ``a + b n + c n^2`` with non-negative coefficients (prefill never gets cheaper)."""
    n = np.array([p[0] for p in points], dtype=float)
    t = np.array([p[1] for p in points], dtype=float)
    best: tuple[float, float, float] | None = None
    best_err = float("inf")
    for cols in ((0, 1, 2), (0, 1), (1, 2), (1,), (0, 2)):
        design = np.stack([n**k for k in cols], axis=1)
        coef, *_ = np.linalg.lstsq(design, t, rcond=None)
        if (coef < 0).any():
            continue
        err = float(((design @ coef - t) ** 2).sum())
        if err < best_err - 1e-12:
            full = [0.0, 0.0, 0.0]
            for k, v in zip(cols, coef):
                full[k] = float(v)
            best, best_err = (full[0], full[1], full[2]), err
    return best or (0.0, float(t.max() / max(n.max(), 1.0)), 0.0)


def filler(tokens_hint: int, rng: random.Random) -> str:
    """Unique nonsense prose, so no measurement hits the prefix cache."""
    words = [f"{rng.randrange(16**6):06x}"] + [rng.choice(_WORDS) for _ in range(tokens_hint)]
    return " ".join(words)


async def measure_prefill(backend: Backend, lengths: tuple[int, ...] = (32, 1024, 3072)) -> list[tuple[float, float]]:
    """(prompt tokens, TTFT seconds) of 1-token generations at each length, after a warm-up."""
    rng = random.Random(time.monotonic_ns())
    limit = backend.context_length - 16
    await complete(backend, Call([{"role": "user", "content": filler(8, rng)}], max_tokens=1, tag="cost:warmup"))
    points = []
    for n in lengths:
        words = max(1, min(n, limit))
        msgs = [{"role": "user", "content": filler(words, rng)}]
        while (await backend.count_tokens(msgs)) > limit and words > 1:
            words = int(words * 0.8)
            msgs = [{"role": "user", "content": filler(words, rng)}]
        result = await complete(backend, Call(msgs, max_tokens=1, tag="cost:prefill"))
        points.append((float(result.prompt_tokens - (result.cached_tokens or 0)), result.ttft_s))
    return points


def measure_stage(run: Callable[[str, str, int], Any], count: Callable[[str], int], tokens: int = 600) -> tuple[float, float]:
    """(base s, s/token) of a compressor stage, from a short and a long run after a warm-up."""
    rng = random.Random(7)
    query = "Which lantern is near the harbor?"
    sentences: Callable[[int], str] = lambda n: ". ".join(filler(12, rng) for _ in range(max(1, n // 14))) + "."  # noqa: E731
    run(sentences(40), query, 10)  # loads the model
    samples = []
    for size in (max(60, tokens // 6), tokens):
        text = sentences(size)
        n = count(text)
        t0 = time.perf_counter()
        run(text, query, n // 2)
        samples.append((n, time.perf_counter() - t0))
    (n1, t1), (n2, t2) = samples
    per = max((t2 - t1) / max(n2 - n1, 1), t2 / max(n2, 1) * 0.5, 1e-7)
    return max(0.0, t2 - per * n2), per


def _cache_path(home: Path) -> Path:
    return home / CACHE_FILE


def load_cached(home: Path, key: str) -> CostModel | None:
    path = _cache_path(home)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return CostModel.from_json(data[key]) if key in data else None


def save_cached(home: Path, model: CostModel) -> None:
    """Atomic rewrite, so concurrent processes never read half a file."""
    path = _cache_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        data = {}
    data[model.key] = model.to_json()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cost.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


_memo: dict[tuple[str, str], CostModel] = {}
_locks: dict[int, asyncio.Lock] = {}


def _lock() -> asyncio.Lock:
    """One lock per event loop: asyncio locks must not cross loops."""
    return _locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())


async def get_cost_model(backend: Backend, home: Path, compressor: Any, fine: bool = False, refresh: bool = False) -> CostModel:
    """The cached model for this backend, measured now if missing (``fine`` also times the LM scorer)."""
    key = backend_key(backend)
    async with _lock():
        model = None if refresh else (_memo.get((str(home), key)) or load_cached(home, key))
        if model is None or (fine and model.fine is None):
            t0 = time.perf_counter()
            log.info("measuring the compression cost model once for %s (cached in %s)", key, _cache_path(home))
            if model is None:
                points = await measure_prefill(backend)
                model = CostModel(key, fit_quadratic(points), samples={"prefill": [list(p) for p in points]})
                model.coarse = await asyncio.to_thread(
                    measure_stage, lambda t, q, b: compressor.coarse.compress(t, q, b), compressor.count
                )
            if fine:
                model.fine = await asyncio.to_thread(
                    measure_stage, lambda t, q, b: compressor.fine.compress(t, q, budget=b), compressor.count, 400
                )
            model.measured_at = time.time()
            save_cached(home, model)
            log.info("measured cost model %s in %.1f s: %s", key, time.perf_counter() - t0, model.to_json())
        _memo[(str(home), key)] = model
        return model
