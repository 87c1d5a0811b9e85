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
  routing should change next to nothing). Optional further arms send the same
  runs through vLLM's own router (``vllm-router``, one arm per policy, named
  ``vllm-router:POLICY``) in front of the same servers; they rotate with the
  others, and each is compared with the affinity arm the same way.
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

from vivace_bench.backend_bench import machine_info
from vivace_bench.stats import median as _median
from vivace_bench.stats import percentile

ARMS = ("affinity", "spread")  # vivace's own fleet, with and without prefix affinity
ROUTER_ARM = "vllm-router:"  # + the policy: the same runs through vLLM's router

# The calls each server has taken so far under an arm (its backend's own count, or the router's).
Served = Callable[[str, Any], Awaitable[dict[str, int]]]


def router_arm(policy: str) -> str:
    return ROUTER_ARM + policy


async def _backend_served(arm: str, backend: Any) -> dict[str, int]:
    return dict(backend.served)


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
    latencies = [r["latency_s"] for r in runs]
    output = sum(r["output_tokens"] for r in runs)
    return {
        "runs": len(runs),
        "latency_median_s": _median(latencies),
        "latency_p95_s": round(p95, 4) if (p95 := percentile(latencies, 0.95)) is not None else None,
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "cached_share": round(cached / prompt, 4) if prompt else None,
        "output_tokens": output,
        # one run at a time: output tokens per second of run time
        "output_tok_s": round(output / sum(latencies), 2) if sum(latencies) > 0 else None,
        "servers_used_median": _median([r["servers_used"] for r in runs]),
        "calls": sum(r["calls"] for r in runs),
    }


def _versus_affinity(rows: list[dict[str, Any]], arm: str) -> dict[str, Any]:
    """``arm`` against the affinity arm, per question: latency ratio (above 1: affinity faster) and agreement."""
    pairs = [(r[arm], r["affinity"]) for r in rows]
    return {
        "latency_ratio_median": _median([a["latency_s"] / b["latency_s"] for a, b in pairs if b["latency_s"] > 0]),
        "same_answer_share": round(sum(a["answer"] == b["answer"] for a, b in pairs) / len(pairs), 4) if pairs else None,
        "answer_similarity_median": _median([similarity(a["answer"], b["answer"]) for a, b in pairs]),
    }


def summarize(rows: list[dict[str, Any]], arms: tuple[str, ...] = ARMS) -> dict[str, Any]:
    ratios = [r["spread"]["latency_s"] / r["affinity"]["latency_s"] for r in rows if r["affinity"]["latency_s"] > 0]
    return {
        **{arm: _arm_summary(rows, arm) for arm in arms},
        "speedup_affinity_median": _median(ratios),  # spread latency / affinity latency, per question
        "same_answer_share": round(sum(r["same_answer"] for r in rows) / len(rows), 4) if rows else None,
        "answer_similarity_median": _median([r["answer_similarity"] for r in rows]),
        "versus_affinity": {arm: _versus_affinity(rows, arm) for arm in arms if arm != "affinity"},
    }


async def measure_affinity(
    connect: Callable[[str], Awaitable[Any]],
    urls: list[str],
    questions: list[dict[str, str]],
    opts: dict[str, Any],
    *,
    arms: tuple[str, ...] = ARMS,
    served: Served = _backend_served,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Each question in every arm, rotating which goes first; returns the rows and whether caches were reset.

    With the two vivace arms alone the rotation is the old alternation.
    """
    from vivace.agents import ask

    backends: dict[str, Any] = {}
    reset = True
    rows: list[dict[str, Any]] = []
    try:
        for arm in arms:
            backends[arm] = await connect(arm)
        for i, q in enumerate(questions):
            row: dict[str, Any] = {"id": q["id"], "question": q["question"]}
            order = arms[i % len(arms):] + arms[:i % len(arms)]
            for arm in order:
                reset = await reset_caches(urls) and reset
                backend = backends[arm]
                before = await served(arm, backend)
                trace = await ask(q["question"], backend, mode="sot", **opts)
                after = await served(arm, backend)
                row[arm] = run_record(trace, {u: after.get(u, 0) - before.get(u, 0) for u in urls})
            row["first"] = order[0]
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
    connect: Callable[[str], Awaitable[Any]],
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

    backend = await connect("affinity")
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
    connect: Callable[[str], Awaitable[Any]],
    urls: list[str],
    questions: list[dict[str, str]],
    *,
    max_tokens: int,
    max_points: int,
    repetition_penalty: float,
    kill: Callable[[int], None] | None = None,
    failover_runs: int = 4,
    router_policies: tuple[str, ...] = (),
    served: Served = _backend_served,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The report: every arm per question, then the failover (when ``kill`` can end a server).

    ``connect(arm)`` opens an arm's backend: ``affinity`` and ``spread`` over
    ``urls``, ``vllm-router:POLICY`` (one per ``router_policies``) through that
    router; ``served(arm, backend)`` counts the calls per server so far.
    """
    from vivace.agents import ask

    opts: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0.0, "repetition_penalty": repetition_penalty,
            "max_points": max_points}
    arms = ARMS + tuple(router_arm(p) for p in router_policies)
    report: dict[str, Any] = {
        "bench": "fleet",
        "servers": urls,
        "config": {**opts, "mode": "sot", "arms": list(arms),
                   "order": "arms rotate which runs first per question (two arms: they alternate)",
                   "questions_planned": len(questions)},
        "machine": machine_info(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    warm = await connect("spread")  # spread: every server runs the prompts once, so no arm pays a first-request cost
    try:
        for _ in urls:
            await ask(questions[0]["question"], warm, mode="sot", **{**opts, "max_tokens": 32})
    finally:
        await warm.aclose()
    rows, reset = await measure_affinity(connect, urls, questions, opts, arms=arms, served=served, progress=progress)
    report["questions"] = rows
    report["cache_reset_per_run"] = reset
    report["summary"] = summarize(rows, arms)
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
