"""`vivace bench fleet`: prefix affinity across real servers, and a server lost mid-run.

Two measurements on one set of OpenAI-compatible servers:

- **Affinity.** Every question runs as a forced SoT run (a skeleton, then
  sibling expansions that share a long prefix) twice: once with the fleet's
  prefix affinity, once with plain least-outstanding spreading. The two arms
  alternate which goes first per question, and every run starts from cold
  prefix caches where the servers allow a reset (vLLM's
  ``/reset_prefix_cache``). Per arm: latency, prompt and cached tokens (the
  servers' own counts), how many servers a run touched. The quality figure
  beside the ratio: how far the two arms' answers agree (greedy decoding, so
  routing should change next to nothing).
- **Failover.** Several runs at once; one server is killed (SIGKILL) while
  answers stream. Every run must still finish on the others: answers cut off
  mid-stream are resumed elsewhere (``vivace.runtime.openai_reply``). Counted:
  failed runs, calls that did not finish, resumed answers.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import time
from typing import Any, Awaitable, Callable

import httpx

from vivace.eval.backend_bench import machine_info
from vivace.eval.stats import median as _median

ARMS = ("affinity", "spread")


def similarity(a: str | None, b: str | None) -> float:
    """Word-level agreement of two answers (difflib's ratio): 1.0 is the same text.

    Why not identity alone: vLLM on CPU is not batch-invariant, so greedy decoding
    can change a word when a request is batched or cached differently.
    """
    if a is None or b is None:
        return 0.0
    return round(difflib.SequenceMatcher(None, a.split(), b.split(), autojunk=False).ratio(), 4)


async def reset_caches(urls: list[str]) -> bool:
    """Empty every server's prefix cache; False when a server has no reset (vLLM without dev mode, others)."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        try:
            answers = await asyncio.gather(*(client.post(f"{u}/reset_prefix_cache") for u in urls))
        except httpx.HTTPError:
            return False
    return all(a.status_code == 200 for a in answers)


def run_record(trace: Any, served: dict[str, int]) -> dict[str, Any]:
    prompt = sum(c.prompt_tokens for c in trace.calls)
    cached = sum(c.cached_tokens or 0 for c in trace.calls)
    return {
        "latency_s": round(trace.latency_s, 4),
        "calls": len(trace.calls),
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "cached_share": round(cached / prompt, 4) if prompt else None,
        "output_tokens": trace.output_tokens,
        "servers_used": sum(1 for n in served.values() if n),
        "calls_per_server": served,
        "unfinished_calls": sum(1 for c in trace.calls if c.finish_reason not in ("stop", "length")),
        "answer": trace.answer,
    }


def _arm_summary(rows: list[dict[str, Any]], arm: str) -> dict[str, Any]:
    runs = [r[arm] for r in rows]
    prompt = sum(r["prompt_tokens"] for r in runs)
    cached = sum(r["cached_tokens"] for r in runs)
    return {
        "runs": len(runs),
        "latency_median_s": _median([r["latency_s"] for r in runs]),
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "cached_share": round(cached / prompt, 4) if prompt else None,
        "servers_used_median": _median([r["servers_used"] for r in runs]),
        "calls": sum(r["calls"] for r in runs),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [r["spread"]["latency_s"] / r["affinity"]["latency_s"] for r in rows if r["affinity"]["latency_s"] > 0]
    return {
        **{arm: _arm_summary(rows, arm) for arm in ARMS},
        "speedup_affinity_median": _median(ratios),  # spread latency / affinity latency, per question
        "same_answer_share": round(sum(r["same_answer"] for r in rows) / len(rows), 4) if rows else None,
        "answer_similarity_median": _median([r["answer_similarity"] for r in rows]),
    }


async def measure_affinity(
    connect: Callable[[bool], Awaitable[Any]],
    urls: list[str],
    questions: list[dict[str, str]],
    opts: dict[str, Any],
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Each question in both arms, alternating which goes first; returns the rows and whether caches were reset."""
    from vivace.agents import ask

    backends = {arm: await connect(arm == "affinity") for arm in ARMS}
    reset = True
    rows: list[dict[str, Any]] = []
    try:
        for i, q in enumerate(questions):
            row: dict[str, Any] = {"id": q["id"], "question": q["question"]}
            for arm in ARMS if i % 2 == 0 else ARMS[::-1]:
                reset = await reset_caches(urls) and reset
                backend = backends[arm]
                before = dict(backend.served)
                trace = await ask(q["question"], backend, mode="sot", **opts)
                row[arm] = run_record(trace, {u: backend.served[u] - before[u] for u in urls})
            row["first"] = ARMS[i % 2]
            row["same_answer"] = row["affinity"]["answer"] == row["spread"]["answer"]
            row["answer_similarity"] = similarity(row["affinity"]["answer"], row["spread"]["answer"])
            rows.append(row)
            if progress:
                progress(row)
    finally:
        for backend in backends.values():
            await backend.aclose()
    return rows, reset


async def measure_failover(
    connect: Callable[[bool], Awaitable[Any]],
    urls: list[str],
    questions: list[dict[str, str]],
    opts: dict[str, Any],
    kill: Callable[[int], None] | None,
) -> dict[str, Any]:
    """Run ``questions`` at once; kill the busiest server once answers stream. Every run should still finish.

    Without ``kill``: the same batch with no failure, the twin the failed batch is compared with.
    """
    from vivace.agents import ask
    from vivace.errors import VivaceError

    backend = await connect(True)
    streaming = asyncio.Event()

    def on_event(event: Any) -> None:
        if event.kind == "branch_delta":  # the points are streaming: the most calls are in flight
            streaming.set()

    async def one(q: dict[str, str]) -> Any:
        try:
            return await ask(q["question"], backend, mode="sot", on_event=on_event, **opts)
        except VivaceError as exc:
            return exc

    t0 = time.perf_counter()
    killed: str | None = None
    try:
        tasks = [asyncio.create_task(one(q)) for q in questions]
        waiter = asyncio.create_task(streaming.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        busy = dict(backend.outstanding)
        if kill is not None and not all(t.done() for t in tasks):
            victim = max(range(len(urls)), key=lambda i: busy.get(urls[i], 0))
            killed = urls[victim]
            kill(victim)
            in_flight_at_kill = busy.get(killed, 0)
        else:
            in_flight_at_kill = 0
        results = await asyncio.gather(*tasks)
    finally:
        await backend.aclose()
    traces = [r for r in results if not isinstance(r, BaseException)]
    return {
        "runs": len(results),
        "runs_ok": sum(1 for t in traces if t.status == "done" and t.answer.strip()),
        "runs_failed": len(results) - len(traces),
        "errors": [str(r)[:200] for r in results if isinstance(r, BaseException)],
        "killed": killed,
        "in_flight_on_killed": in_flight_at_kill,
        "calls": sum(len(t.calls) for t in traces),
        "unfinished_calls": sum(1 for t in traces for c in t.calls if c.finish_reason not in ("stop", "length")),
        "resumed_answers": backend.resumed,
        "wall_s": round(time.perf_counter() - t0, 3),
        "answers": [{"id": q["id"], "answer": None if isinstance(t, BaseException) else t.answer}
                    for q, t in zip(questions, results)],
    }


async def run_bench(
    connect: Callable[[bool], Awaitable[Any]],
    urls: list[str],
    questions: list[dict[str, str]],
    *,
    max_tokens: int,
    max_points: int,
    repetition_penalty: float,
    kill: Callable[[int], None] | None = None,
    failover_runs: int = 4,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The report: both arms per question, then the failover (when ``kill`` can end a server)."""
    from vivace.agents import ask

    opts = {"max_tokens": max_tokens, "temperature": 0.0, "repetition_penalty": repetition_penalty,
            "max_points": max_points}
    report: dict[str, Any] = {
        "bench": "fleet",
        "servers": urls,
        "config": {**opts, "mode": "sot", "order": "arms alternate which runs first per question",
                   "questions_planned": len(questions)},
        "machine": machine_info(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    warm = await connect(False)  # spread: every server runs the prompts once, so no arm pays a first-request cost
    try:
        for _ in urls:
            await ask(questions[0]["question"], warm, mode="sot", **{**opts, "max_tokens": 32})
    finally:
        await warm.aclose()
    rows, reset = await measure_affinity(connect, urls, questions, opts, progress=progress)
    report["questions"] = rows
    report["cache_reset_per_run"] = reset
    report["summary"] = summarize(rows)
    if kill is not None and len(urls) > 1:
        # The same batch twice, from cold caches: first with every server up (batching and caching then
        # match), then with one killed mid-run; the answers are compared pairwise.
        batch = [questions[i % len(questions)] for i in range(failover_runs)]  # repeats when there are few
        await reset_caches(urls)
        twin = await measure_failover(connect, urls, batch, opts, None)
        await reset_caches(urls)
        failed = await measure_failover(connect, urls, batch, opts, kill)
        failed["unfailed_wall_s"] = twin["wall_s"]
        failed["answer_similarity_to_unfailed_median"] = _median(
            [similarity(a["answer"], b["answer"]) for a, b in zip(failed["answers"], twin["answers"])])
        report["failover"] = failed
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return report
