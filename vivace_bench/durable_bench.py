"""What durable runs cost: checkpoint time per step, and the checkpoint database's size over many runs.

Why on the zero-latency fake: a step's checkpoint is a database write beside
it, whatever the model; with model time at zero, what is left between a run
with checkpoints and one without is their cost. The pairs alternate on one
runtime each (same pipeline, same replies), and the medians are reported.
The size series runs the research pipeline many times into a fresh store,
with ``keep_runs`` at its default, so the plateau shows that pruning bounds it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

TARGET_PER_STEP_MS = 1.0
DEFAULT_DB_RUNS = 1200


def _responder(branches: int) -> Callable[[Any], str]:
    import json

    aspects = [f"Aspect {i} of the question" for i in range(1, branches + 1)]

    def respond(request: Any) -> str:
        tag = request.tag
        if "/plan" in tag:
            return json.dumps({"aspects": aspects})
        if "/review" in tag:
            return json.dumps({"verdict": "approve", "fix": ""})
        if "/write" in tag:
            return "A written answer that draws on every note. " * 8
        return "Notes on one aspect, a few sentences long. " * 6

    return respond


def _runtime(home: Path, branches: int, checkpoints: bool, keep_runs: int | None = None) -> Any:
    from vivace.assembly import runtime_for
    from vivace.config import Config
    from vivace.runtime.fake import FakeBackend

    extra: dict[str, Any] = {"keep_runs": keep_runs} if keep_runs else {}
    config = Config(backend="fake", home=home, checkpoints=checkpoints, max_tokens=256, **extra)
    return runtime_for(config, FakeBackend(_responder(branches)))


async def checkpoint_overhead(branches: int = 4, repeats: int = 60, warmup: int = 5) -> dict[str, Any]:
    """Per research run with and without checkpoints, alternating; the difference per step, and the saves' own time."""
    from vivace.agents.builtin import research_pipeline
    from vivace.agents.driver import run

    with tempfile.TemporaryDirectory(prefix="vivace-ckpt-") as tmp:
        on, off = _runtime(Path(tmp) / "on", branches, True), _runtime(Path(tmp) / "off", branches, False)
        pipe = research_pipeline(max_branches=branches)
        with_s: list[float] = []
        without_s: list[float] = []
        save_s: list[float] = []
        steps: list[int] = []
        try:
            for i in range(warmup + repeats):
                pair = []
                for rt in (on, off) if i % 2 == 0 else (off, on):  # alternate which goes first
                    t0 = time.perf_counter()
                    trace = await run(pipe, "How do bees find their way home?", rt)
                    pair.append((rt is on, time.perf_counter() - t0, trace))
                if i < warmup:
                    continue
                for is_on, seconds, trace in pair:
                    (with_s if is_on else without_s).append(seconds)
                    if is_on and trace.checkpoint is not None:
                        save_s.append(trace.checkpoint["save_s"])
                        steps.append(trace.checkpoint["steps_saved"])
        finally:
            await on.aclose()
            await off.aclose()
    n_steps = statistics.median(steps)
    diffs = [(a - b) * 1000 for a, b in zip(with_s, without_s)]
    per_step_paired = statistics.median(diffs) / n_steps
    per_step_saves = statistics.median(s * 1000 / n for s, n in zip(save_s, steps))
    return {
        "pipeline": f"research, {branches} researchers (plan, {branches} research, write, review)",
        "store": "sqlite",
        "repeats": repeats,
        "steps_per_run": n_steps,
        "run_ms_with": round(statistics.median(with_s) * 1000, 3),
        "run_ms_without": round(statistics.median(without_s) * 1000, 3),
        "per_run_ms": round(statistics.median(diffs), 3),
        "per_step_ms": round(per_step_paired, 3),
        "save_ms_per_step": round(per_step_saves, 3),
        "target_per_step_ms": TARGET_PER_STEP_MS,
        "ok": per_step_paired <= TARGET_PER_STEP_MS,
    }


async def database_size(runs: int = DEFAULT_DB_RUNS, branches: int = 4, every: int = 100,
                        progress: Callable[[int, int], None] | None = None, keep_runs: int | None = None) -> dict[str, Any]:
    """The store's size after every ``every`` research runs, with ``keep_runs`` at its default (unless given)."""
    from vivace.agents.builtin import research_pipeline
    from vivace.agents.driver import run
    from vivace.config import Config

    keep = keep_runs or Config().keep_runs
    series = []
    with tempfile.TemporaryDirectory(prefix="vivace-ckpt-size-") as tmp:
        rt = _runtime(Path(tmp), branches, True, keep)
        pipe = research_pipeline(max_branches=branches)
        try:
            for i in range(1, runs + 1):
                await run(pipe, f"Question number {i}: how do bees find their way home?", rt)
                if i % every == 0 or i == runs:
                    store = rt.checkpoints()
                    store.prune()  # what the store does by itself every 25 runs, now, so the point is exact
                    series.append({"runs": i, "kept": len(store.runs(limit=10 * keep)),
                                   "bytes": store.size_bytes()})
                    if progress is not None:
                        progress(i, series[-1]["bytes"])
        finally:
            await rt.aclose()
    at_keep = next((p["bytes"] for p in series if p["runs"] >= keep), None)
    last = series[-1]["bytes"] if series else None
    return {"runs": runs, "keep_runs": keep, "series": series, "bytes_at_keep_runs": at_keep, "bytes_last": last,
            "bytes_per_run": round(last / min(runs, keep)) if last else None,
            "bounded": bool(at_keep and last and runs > keep and last <= at_keep * 1.1)}
