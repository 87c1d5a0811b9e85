"""`vivace bench safety`: does each acceleration change what the model refuses?

How it is measured:
- the same prompts (StrongREJECT's forbidden prompts and a benign control set
  of the same size, ``safety_data``) go through every configuration, greedy,
  with the same answer budget and repetition penalty; every configuration but
  the quantized ones runs on one engine, one configuration after the other;
- prompts of one configuration run concurrently (``concurrency``), which
  changes only the speed: decoding is greedy;
- each answer is scored offline by the refusal rules (``vivace.agents.guard``,
  scorer ``rules-v1``); SoT also scores its skeleton and every point apart,
  because a refused skeleton followed by compliant points is the failure a
  joined answer can hide;
- the figures (``safety_summary``) are rates with Wilson intervals and paired
  differences against normal decoding on the same prompts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vivace.agents.guard import classify
from vivace.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 128
ANSWER_CHARS = 1500  # what report.json keeps of each answer (the scorer sees all of it)
SYSTEM_PROMPT = "safety_answer"


@dataclass(frozen=True)
class Setup:
    """One configuration: how a prompt becomes an answer. ``baseline`` is what its deltas are against."""

    name: str
    technique: str  # normal | sot | auto | system | compression | research | quant
    description: str
    mode: str | None = None  # for the SoT controller
    ratio: float | None = None  # compression: original/compressed tokens
    keep_system: bool | None = None
    guard: bool = False
    quant: str | None = None  # a `bench quant` config name: runs on its own engine
    baseline: str = "normal"


ENGINE_SETUPS: tuple[Setup, ...] = (
    Setup("normal", "normal", "normal decoding of the prompt (the baseline)", mode="normal"),
    Setup("sot", "sot", "Skeleton-of-Thought, forced", mode="sot"),
    Setup("auto", "auto", "auto: the router picks SoT or normal per prompt", mode="auto"),
    Setup("sot+guard", "sot", "SoT forced, guard on: a refused skeleton is not expanded", mode="sot", guard=True),
    Setup("auto+guard", "auto", "auto, guard on: sensitive requests are not split", mode="auto", guard=True),
    Setup("system", "system", "normal decoding under a safety system prompt (compression's reference)"),
    Setup("compress-2x-keep", "compression", "prompt compressed 2x, system prompt kept", ratio=2.0, keep_system=True, baseline="system"),
    Setup("compress-2x-drop", "compression", "prompt and system prompt compressed 2x", ratio=2.0, keep_system=False, baseline="system"),
    Setup("compress-3x-keep", "compression", "prompt compressed 3x, system prompt kept", ratio=3.0, keep_system=True, baseline="system"),
    Setup("compress-3x-drop", "compression", "prompt and system prompt compressed 3x", ratio=3.0, keep_system=False, baseline="system"),
    Setup("research", "research", "the research pipeline (planner, researchers, writer, critic)"),
)
DEFAULT_QUANT = ("w8a8-int8", "kv-fp8-e4m3")


def setups(names: list[str] | None, quant: list[str] | None) -> list[Setup]:
    """The engine setups asked for (normal always first: every delta needs it), then one per quant config."""
    from vivace_bench.quant_configs import BASELINE, by_name

    known = {s.name: s for s in ENGINE_SETUPS}
    chosen = list(ENGINE_SETUPS) if not names else []
    for n in names or []:
        if n not in known:
            raise InputError(f"unknown safety config {n!r}; known: {', '.join(known)}")
        chosen.append(known[n])
    for s in list(chosen):
        for need in ("normal", s.baseline):
            if need not in [c.name for c in chosen]:
                chosen.insert(0, known[need])
    chosen.sort(key=lambda s: [e.name for e in ENGINE_SETUPS].index(s.name))
    qnames = [q for q in (DEFAULT_QUANT if quant is None else quant) if q != BASELINE]
    for q in by_name(qnames) if qnames else []:
        if q.name != BASELINE:
            chosen.append(Setup(f"quant:{q.name}", "quant", f"normal decoding on {q.weights} weights, {q.kv} KV", mode="normal", quant=q.name))
    return chosen


def _score(text: str) -> dict[str, Any]:
    v = classify(text)
    return {"refused": v.label == "refused", "reason": v.reason}


def sot_record(trace: Any, events: list[Any]) -> dict[str, Any]:
    """The SoT parts of a run: skeleton and each point, scored apart."""
    from vivace.agents.events import BranchDone, SkeletonDone

    skeleton = next((e for e in events if isinstance(e, SkeletonDone)), None)
    branches = sorted((e for e in events if isinstance(e, BranchDone)), key=lambda e: e.index)
    points = [{"index": b.index, "point": b.point, "text": b.text[:ANSWER_CHARS], **_score(b.text)} for b in branches]
    out: dict[str, Any] = {
        "routed": (trace.router or {}).get("mode"),
        "route_reason": (trace.router or {}).get("reason"),
        "fallback": (trace.sot or {}).get("fallback"),
        "skeleton": skeleton.text[:ANSWER_CHARS] if skeleton else None,
        "points": points,
    }
    if skeleton is not None:
        listing = " ".join(skeleton.points) if skeleton.points else skeleton.text
        out["skeleton_refused"] = _score(listing)["refused"]
    return out


class Runner:
    """Turns one prompt into one record under a setup, on one backend."""

    def __init__(self, backend: Any, *, max_tokens: int, repetition_penalty: float, compressor: Any = None,
                 research_options: dict[str, Any] | None = None, home: Path | None = None) -> None:
        from vivace.assembly import runtime_for
        from vivace.config import Config

        self.backend = backend
        self.opts: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0.0, "repetition_penalty": repetition_penalty}
        config = Config().replace(max_tokens=max_tokens, temperature=0.0, repetition_penalty=repetition_penalty)
        if home is not None:
            config = config.replace(home=home)  # where the guard's verdicts live
        self.runtime = runtime_for(config, backend, save_runs=False)
        self.compressor = compressor
        self.research_options = research_options or {}
        self.guarded: list[str] | None = None  # the guard's techniques; None: what $VIVACE_HOME says

    async def answer(self, setup: Setup, prompt: dict[str, str]) -> dict[str, Any]:
        from vivace.agents import ask, run

        text = prompt["prompt"]
        events: list[Any] = []
        extra: dict[str, Any] = {}
        if setup.technique in ("normal", "sot", "auto", "quant"):
            trace = await ask(text, self.runtime, mode=setup.mode, on_event=events.append, compression="off",
                              safety_guard=setup.guard, guarded=self.guarded, **self.opts)
            if setup.technique in ("sot", "auto"):
                extra = sot_record(trace, events)
        elif setup.technique == "research":
            trace = await run("research", text, self.runtime, compression="off", options={**self.opts, **self.research_options})
            # Every agent's output is scored too: a researcher handed one fragment may comply where the whole refuses.
            extra = {"steps": [{"step": m.get("step"), "branch": m.get("branch"), "round": m.get("round"),
                                "text": str(m.get("content", ""))[:ANSWER_CHARS], **_score(str(m.get("content", "")))}
                               for m in trace.messages if isinstance(m, dict)]}
        else:
            return {**self._base(prompt), **await self._messages(setup, text)}
        return {
            **self._base(prompt), **_score(trace.answer), "answer": trace.answer[:ANSWER_CHARS],
            "latency_s": round(trace.latency_s, 4), "output_tokens": trace.output_tokens,
            "truncated": any(c.finish_reason == "length" for c in trace.calls), **extra,
        }

    @staticmethod
    def _base(prompt: dict[str, str]) -> dict[str, Any]:
        return {"id": prompt["id"], "set": prompt["set"], "category": prompt["category"]}

    async def _messages(self, setup: Setup, text: str) -> dict[str, Any]:
        """The system-prompt and compression setups: one call through the call path, with the (compressed) messages."""
        from vivace.runtime.call import Call
        from vivace.runtime.prompts import render

        messages, _ = render(SYSTEM_PROMPT, task=text)
        extra: dict[str, Any] = {}
        if setup.ratio:
            user, st = await asyncio.to_thread(self.compressor.compress, text, "", None, setup.ratio)
            messages[-1]["content"] = user
            extra = {"compressed_prompt": user, "ratio": st.ratio}
            if not setup.keep_system:
                system, sst = await asyncio.to_thread(self.compressor.compress, messages[0]["content"], "", None, setup.ratio)
                messages[0]["content"] = system
                extra.update(compressed_system=system, system_ratio=sst.ratio)
        call = Call(messages=messages, node="answer", agent=setup.name, retrieve=False, **self.opts)
        result, _ = await self.runtime.call(call)
        answer = result.text.strip()
        return {**_score(answer), "answer": answer[:ANSWER_CHARS], "latency_s": round(result.e2e_s, 4),
                "output_tokens": result.output_tokens, "truncated": result.finish_reason == "length", **extra}


async def run_setup(runner: Runner, setup: Setup, prompts: list[dict[str, str]], concurrency: int,
                    progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Every prompt under one setup, ``concurrency`` at a time; records in prompt order."""
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(p: dict[str, str]) -> dict[str, Any]:
        nonlocal done
        async with gate:
            rec = await runner.answer(setup, p)
        done += 1
        if progress:
            progress(done, len(prompts))
        return rec

    return list(await asyncio.gather(*(one(p) for p in prompts)))


async def run_quant(setup: Setup, model_dir: Path, home: Path, prompts: list[dict[str, str]], concurrency: int,
                    runner_kw: dict[str, Any], kv_space_gib: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One quantization config on its own engine; an unsupported or failed config is a status, not a crash."""
    from vivace_bench.quant_configs import build_w8a8, by_name, unsupported_reason
    from vivace.runtime.vllm_options import EngineOptions
    from vivace.runtime.vllm_engine import VLLMBackend

    q = by_name([setup.quant or ""])[-1]
    reason = unsupported_reason(q, model_dir, {})
    if reason:
        return [], {"status": "unsupported", "reason": reason}
    path = str(build_w8a8(model_dir, home / "models" / f"{model_dir.name}-w8a8")) if q.checkpoint == "w8a8" else str(model_dir)
    options = EngineOptions(model=path, dtype=q.dtype, quantization=q.quantization if q.checkpoint is None else None,
                            kv_cache_dtype=q.kv_cache_dtype, kv_cache_space_gib=kv_space_gib, max_num_seqs=16,
                            served_model_name=q.name)
    t0 = time.perf_counter()
    try:
        backend = await VLLMBackend.start(options)
    except Exception as exc:  # one config failing must not lose the others
        return [], {"status": "failed", "reason": (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}
    try:
        rows = await run_setup(Runner(backend, **runner_kw), setup, prompts, concurrency)
    finally:
        await backend.aclose()
    return rows, {"status": "ok", "load_s": getattr(backend, "load_s", None), "wall_s": round(time.perf_counter() - t0, 2),
                  "weights": q.weights, "kv": q.kv}


def _every_fifth(name: str, say: Callable[[str], None]) -> Callable[[int, int], None]:
    def progress(done: int, total: int) -> None:
        if done % max(1, total // 5) == 0:
            say(f"  {name}: {done}/{total}")

    return progress


async def run_bench(
    backend: Any, setups_: list[Setup], harmful: list[dict[str, str]], benign: list[dict[str, str]], *,
    max_tokens: int, repetition_penalty: float, concurrency: int = 16, research_limit: int | None = None,
    bound: float = 0.05, model_dir: Path | None = None, home: Path | None = None, kv_space_gib: float = 1.0,
    out_dir: Path | None = None, base_report: dict[str, Any] | None = None, say: Callable[[str], None] = log.info,
    close_backend: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Run every setup on the same prompts; report.json is rewritten after each setup (a partial run keeps its figures)."""
    import os

    from vivace_bench import write_report
    from vivace_bench.safety_data import stratified
    from vivace_bench.safety_summary import summarize

    prompts = harmful + benign
    runner_kw: dict[str, Any] = {"max_tokens": max_tokens, "repetition_penalty": repetition_penalty}
    report: dict[str, Any] = dict(base_report or {})
    report.update(bench="safety", scorer="rules-v1 (offline refusal rules, vivace.agents.guard)")
    report.setdefault("config", {}).update(
        max_tokens=max_tokens, temperature=0.0, repetition_penalty=repetition_penalty, concurrency=concurrency,
        harmful=len(harmful), benign=len(benign), research_limit=research_limit, guard_bound=bound,
        configs=[s.name for s in setups_], backend=getattr(backend, "name", "?"), model=getattr(backend, "model", "?"),
    )
    from vivace.agents.guard import sensitive
    from vivace_bench.stats import rate

    # How much of each set the guard's topic rules call sensitive: its reach on harmful prompts, its cost on benign ones.
    report["sensitive_rule"] = {"harmful": rate([sensitive(p["prompt"]) is not None for p in harmful]),
                                "benign": rate([sensitive(p["prompt"]) is not None for p in benign])}
    report["setups"] = {s.name: {"technique": s.technique, "description": s.description, "baseline": s.baseline} for s in setups_}
    report["load_average_start"] = [round(x, 2) for x in os.getloadavg()]
    results: dict[str, list[dict[str, Any]]] = {}
    report["results"] = results
    report["quant_status"] = {}
    compressor = None
    if any(s.ratio for s in setups_):
        from vivace.compression import FineCompressor

        compressor = FineCompressor(model_dir, home=home)
    runner = Runner(backend, compressor=compressor, home=home, **runner_kw)

    def save() -> None:
        report["summary"] = summarize(results, setups_, bound)
        report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        if out_dir is not None:
            write_report(out_dir, report)

    for setup in [s for s in setups_ if s.technique != "quant"]:
        if setup.guard and "sot" in results:
            runner.guarded = report["guarded_in_run"] = summarize(results, setups_, bound)["guard"]["guarded"]  # this run's SoT verdict
        these = prompts
        if setup.technique == "research" and research_limit is not None:
            these = stratified(harmful, research_limit) + stratified(benign, research_limit)
        t0 = time.perf_counter()
        say(f"{setup.name}: {len(these)} prompts ({setup.description})")
        results[setup.name] = await run_setup(runner, setup, these, concurrency, _every_fifth(setup.name, say))
        rows = results[setup.name]
        say(f"{setup.name}: done in {time.perf_counter() - t0:.0f} s; refused {sum(r['refused'] for r in rows if r['set'] == 'harmful')}"
            f"/{sum(1 for r in rows if r['set'] == 'harmful')} harmful, {sum(r['refused'] for r in rows if r['set'] == 'benign')}"
            f"/{sum(1 for r in rows if r['set'] == 'benign')} benign")
        save()
    quant = [s for s in setups_ if s.technique == "quant"]
    if quant and close_backend is not None:
        await close_backend()  # an idle engine still takes CPU from the next one
    for setup in quant:
        if model_dir is None or home is None:
            report["quant_status"][setup.name] = {"status": "skipped", "reason": "needs a local model folder (--backend vllm)"}
            continue
        say(f"{setup.name}: starting its engine...")
        rows, status = await run_quant(setup, model_dir, home, prompts, concurrency, runner_kw, kv_space_gib)
        report["quant_status"][setup.name] = status
        say(f"{setup.name}: {status['status']}" + (f" ({status.get('reason')})" if status.get("reason") else ""))
        if rows:
            results[setup.name] = rows
        save()
    save()
    report["complete"] = True
    if out_dir is not None:
        write_report(out_dir, report)
    return report
