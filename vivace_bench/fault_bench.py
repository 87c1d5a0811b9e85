"""`vivace bench faults`: SIGKILL a pipeline run at a random point, resume it, and count what ran twice.

Why whole processes: a kill is what durable runs are for, and only a real
process killed with SIGKILL (no ``finally``, no flush, a lock left to the
kernel) tests it. Each trial runs ``vivace run PIPELINE`` against one vLLM
server on loopback (started once, so the trials do not each start an
engine), waits until the run's checkpoint exists, kills the run's process
group at a uniformly random point of a calibrated run's duration, and runs
``vivace resume``. From the two records and the checkpoint it counts:
finished steps run again (a step the checkpoint held that made calls in the
resumed run), resumed runs that ended ``done``, and complete final records.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

DEFAULT_TASKS = (
    "How do honey bees find their way back to the hive?",
    "Why do some metals rust and others do not?",
    "What makes a bridge design suitable for long spans?",
    "How does a refrigerator move heat out of its box?",
)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vivace", *args]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a bench started in the background must not pass SIGINT ignored on


def _model_flags(url: str, home: Path, max_tokens: int) -> list[str]:
    return ["--backend", "openai", "--base-url", url, "--home", str(home), "--max-tokens", str(max_tokens)]


def _run(args: list[str], timeout_s: float) -> tuple[int, dict[str, Any] | None, str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, preexec_fn=_default_sigint)
    try:
        record = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        record = None
    return proc.returncode, record, proc.stderr.strip()[-300:]


async def _wait_for_run(store: Any, known: set[str], proc: subprocess.Popen[str], deadline: float) -> str | None:
    """The id of the run the child began (its header checkpoint exists), or None if it ended or never did."""
    while time.monotonic() < deadline:
        fresh = [r["run_id"] for r in store.runs(5) if r["run_id"] not in known]
        if fresh:
            return str(fresh[0])
        if proc.poll() is not None:
            return None
        await asyncio.sleep(0.05)
    return None


def _check(stored: Any, record: dict[str, Any] | None, pipeline_steps: set[str]) -> dict[str, Any]:
    """What the resumed run's record says about the steps the checkpoint held."""
    finished = set(stored.steps)
    steps = (record or {}).get("steps") or []
    rerun = [s for s in steps if s.get("key") in finished and not (s.get("extra") or {}).get("resumed")]
    rerun_calls = sum(int(s.get("calls") or 0) for s in steps if s.get("key") in finished)
    top = {s["step"] for s in steps if s.get("parent") is None}
    return {
        "finished_before_kill": len([k for k in finished if "/" not in k]),
        "saved_parts": len(finished),
        "resumed_steps": len((record or {}).get("meta", {}).get("resumed_steps") or []),
        "rerun_steps": len(rerun),
        "rerun_calls": rerun_calls,
        "status": (record or {}).get("status"),
        # every step of the pipeline in the record, and the run done (what the small model wrote is not judged)
        "complete": bool(record and record.get("status") == "done" and isinstance(record.get("answer"), str)
                         and pipeline_steps <= top),
        "calls_after_resume": len((record or {}).get("calls") or []),
    }


async def run_trials(url: str, trials: int = 20, *, pipeline: str = "research", tasks: tuple[str, ...] = DEFAULT_TASKS,
                     max_tokens: int = 96, seed: int = 0, home: Path | None = None, timeout_s: float = 900.0,
                     progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """``trials`` kill-and-resume trials of ``pipeline`` against the vLLM server at ``url``."""
    from vivace.agents.driver import resolve
    from vivace.agents.pipeline.spec import single
    from vivace.runtime.checkpoints import RunStore

    rng = random.Random(seed)
    steps = set(single(resolve(pipeline)).steps)
    with tempfile.TemporaryDirectory(prefix="vivace-faults-") as tmp:
        home = home or Path(tmp)
        flags = _model_flags(url, home, max_tokens)
        code, calib, err = await asyncio.to_thread(_run, _cli("run", pipeline, tasks[0], "--json", *flags), timeout_s)
        if code != 0 or calib is None:
            from vivace.errors import BackendError

            raise BackendError(f"the calibration run failed (exit {code}): {err}")
        duration = float(calib["latency_s"])
        store = RunStore.open(None, home, 10_000)
        rows: list[dict[str, Any]] = []
        early: list[dict[str, Any]] = []  # runs that finished before their kill point (redrawn)
        try:
            for i in range(trials):
                for _ in range(5):  # a run that ended before its kill point is no trial: draw another point
                    row = await _trial(i, store, flags, pipeline, tasks[i % len(tasks)], duration, rng, steps,
                                       timeout_s)
                    if progress is not None:
                        progress(row)
                    if row["resumed"] or row.get("error"):
                        break
                    early.append(row)
                    if row.get("run_s"):  # the machine got faster (less load): draw from this run's length
                        duration = min(duration, float(row["run_s"]))
                rows.append(row)
        finally:
            await store.aclose()
    resumed = [r for r in rows if r["resumed"]]
    return {
        "pipeline": pipeline,
        "trials": trials,
        "max_tokens": max_tokens,
        "calibrated_run_s": round(duration, 3),
        "killed": sum(r["killed"] and r["resumed"] for r in rows),
        "finished_before_kill_point": len(early),
        "resumed_ok": sum(r["status"] == "done" for r in resumed),
        "complete_records": sum(r["complete"] for r in resumed),
        "rerun_steps": sum(r["rerun_steps"] for r in resumed),
        "rerun_calls": sum(r["rerun_calls"] for r in resumed),
        "finished_before_kill_median": statistics.median([r["finished_before_kill"] for r in resumed]) if resumed else None,
        "kill_at_s_median": statistics.median([r["kill_at_s"] for r in rows]) if rows else None,
        "resume_s_median": statistics.median([r["resume_s"] for r in resumed]) if resumed else None,
        "rows": rows,
    }


async def _trial(i: int, store: Any, flags: list[str], pipeline: str, task: str, duration: float,
                 rng: random.Random, steps: set[str], timeout_s: float) -> dict[str, Any]:
    known = {r["run_id"] for r in store.runs(50)}
    kill_at = rng.uniform(0.02, 0.8) * duration
    proc = subprocess.Popen(_cli("run", pipeline, task, "--json", *flags), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True, preexec_fn=_default_sigint)
    row: dict[str, Any] = {"trial": i, "kill_at_s": round(kill_at, 3), "killed": False, "resumed": False}
    try:
        run_id = await _wait_for_run(store, known, proc, time.monotonic() + timeout_s)
        if run_id is None:
            return {**row, "error": f"the run never started (exit {proc.poll()})", "status": None}
        row["run_id"] = run_id
        await asyncio.sleep(kill_at)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            row["killed"] = True
        await asyncio.to_thread(proc.wait)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stored = store.load_now(run_id)
    row["status_after_kill"] = stored.status if stored else None
    if stored is None or stored.status == "done":  # it finished before the kill: nothing to resume
        return {**row, "status": stored.status if stored else None, "complete": False, "rerun_steps": 0,
                "rerun_calls": 0, "finished_before_kill": len(stored.steps) if stored else 0,
                "run_s": (stored.record or {}).get("latency_s") if stored else None}
    t0 = time.monotonic()
    code, record, err = await asyncio.to_thread(_run, _cli("resume", run_id, "--json", *flags), timeout_s)
    row.update(resumed=True, resume_exit=code, resume_s=round(time.monotonic() - t0, 3), **_check(stored, record, steps))
    if code != 0:
        row["error"] = err
    return row
