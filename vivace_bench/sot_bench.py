"""`vivace bench sot`: Skeleton-of-Thought vs normal decoding vs auto (the router), per question.

How it is measured:
- every question runs normal, then SoT, then auto, one run at a time on the
  same engine in one process, greedy, with the same answer budget
  (``--max-tokens``, default 768 so that the embedded model's normal answers
  end on their own under the default repetition penalty);
- questions run round-robin over categories, so a partial run (``--limit`` or
  an interrupted one: report.json is rewritten after every question) still
  covers every category;
- latencies and token counts come from the runs' traces (``RunTrace.latency_s``,
  ``CallTrace``), never from a second clock;
- the router's embedder and the engine are warmed before timing, so one-off
  loads are not charged to the first question;
- a normal answer that hit the cap (``finish_reason == "length"``) is
  reported as truncated, and the summary gives the speedup without those
  questions too: a speedup that comes from cutting the baseline is not one.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from vivace_bench import write_report
from vivace_bench.sot_records import arm_record, question_record
from vivace_bench.stats import median as _median
from vivace.errors import InputError

log = logging.getLogger(__name__)

CATEGORIES = (
    "generic", "knowledge", "common-sense", "counterfactual", "roleplay",
    "writing", "math", "coding", "fermi",
)
SOT_SUITED = ("generic", "knowledge", "common-sense", "counterfactual", "roleplay")
NEVER_SOT = ("math", "coding")
DEFAULT_MAX_TOKENS = 768
WARMUP_QUESTION = "What makes a good breakfast?"

# The targets on the embedded engine.
TARGETS = {
    "speedup_sot_suited_median_min": 2.5,
    "length_ratio_suited_median_min": 0.8,
    "coverage_suited_median_min": 0.8,
    "auto_normal_overhead_median_max": 0.05,
    "auto_normal_overhead_max_max": 0.25,
}


def default_questions_path() -> Any:
    return resources.files("vivace_bench").joinpath("data/sot_questions.jsonl")


def load_questions(path: Any = None) -> list[dict[str, str]]:
    """Questions from a JSONL file (``id`` and ``question`` required, ``category`` optional)."""
    src = Path(path) if path is not None else default_questions_path()
    if path is not None and not Path(path).is_file():
        raise InputError(f"questions file not found: {path}")
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{src}:{n}: not JSON") from None
        if not isinstance(row, dict) or not str(row.get("question") or "").strip() or not row.get("id"):
            raise InputError(f'{src}:{n}: needs "id" and "question"')
        qid = str(row["id"])
        if qid in seen:
            raise InputError(f"{src}:{n}: duplicate id {qid!r}")
        seen.add(qid)
        out.append({"id": qid, "category": str(row.get("category") or "uncategorized"), "question": str(row["question"]).strip()})
    if not out:
        raise InputError(f"{src}: no questions")
    return out


def select(questions: list[dict[str, str]], categories: list[str] | None = None, limit: int | None = None) -> list[dict[str, str]]:
    """Filter by category, then order round-robin over categories (file order within one) and cut at ``limit``."""
    if categories:
        known = {q["category"] for q in questions}
        unknown = sorted(set(categories) - known)
        if unknown:
            raise InputError(f"no questions in categories: {', '.join(unknown)} (have: {', '.join(sorted(known))})")
        questions = [q for q in questions if q["category"] in categories]
    by_cat: dict[str, list[dict[str, str]]] = {}
    for q in questions:
        by_cat.setdefault(q["category"], []).append(q)
    ordered: list[dict[str, str]] = []
    queues = list(by_cat.values())
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    if limit is not None:
        if limit < 1:
            raise InputError("--limit must be at least 1")
        ordered = ordered[:limit]
    return ordered


def _group(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one set of questions."""
    clean = [r for r in rows if not r["normal"]["truncated"]]
    return {
        "n": len(rows),
        "speedup_sot_median": _median([r["speedup_sot"] for r in rows if r["speedup_sot"] is not None]),
        "speedup_auto_median": _median([r["speedup_auto"] for r in rows if r["speedup_auto"] is not None]),
        "length_ratio_median": _median([r["length_ratio"] for r in rows if r["length_ratio"] is not None]),
        "coverage_median": _median([c for r in rows if (c := r.get("coverage", {}).get("normal_in_sot")) is not None]),
        "coverage_reverse_median": _median(
            [c for r in rows if (c := r.get("coverage", {}).get("sot_in_normal")) is not None]),
        "speedup_sot_median_untruncated": _median([r["speedup_sot"] for r in clean if r["speedup_sot"] is not None]),
        "normal_latency_median_s": _median([r["normal"]["latency_s"] for r in rows]),
        "sot_latency_median_s": _median([r["sot"]["latency_s"] for r in rows]),
        "normal_output_tokens_median": _median([r["normal"]["output_tokens"] for r in rows]),
        "sot_output_tokens_median": _median([r["sot"]["output_tokens"] for r in rows]),
        "sot_points_median": _median([r["sot"]["points"] for r in rows]),
        **_arm_group("pipelined", [r["pipelined"] for r in rows if "pipelined" in r]),
        **_arm_group("unplanned", [r["unplanned"] for r in rows if "unplanned" in r]),
        **({"reference_coverage_median": _median([c for r in refs if (c := r["coverage"].get("normal_in_sot")) is not None]),
            "reference_length_ratio_median": _median([r["length_ratio"] for r in refs if r["length_ratio"] is not None])}
           if (refs := [r["reference"] for r in rows if "reference" in r]) else {}),
        "plan_error_median": _median([abs(p["expected_tokens"] - r["normal"]["output_tokens"]) / r["normal"]["output_tokens"]
                                      for r in rows if (p := r["sot"].get("length_plan")) and r["normal"]["output_tokens"]]),
        **_judge_group(rows),
        "routed_sot": sum(1 for r in rows if r["mode_auto"] == "sot"),
        "fallbacks": sum(1 for r in rows if r["sot"]["fallback"]),
        "normal_truncated": sum(1 for r in rows if r["normal"]["truncated"]),
        "sot_truncated": sum(1 for r in rows if r["sot"]["truncated"]),
    }


def _judge_group(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from vivace_bench.sot_judge import tally

    judged = [r["judge"] for r in rows if "judge" in r]
    piped = [r["pipelined"]["judge"] for r in rows if "judge" in r.get("pipelined", {})]
    return ({"judge": tally(judged)} if judged else {}) | ({"pipelined_judge": tally(piped)} if piped else {})


def _arm_group(arm: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    """An extra arm's medians, keyed ``<arm>_...``: speedup over normal and over plain SoT, length, coverage."""
    if not recs:
        return {}

    def med(key: str) -> float | None:
        return _median([r[key] for r in recs if r.get(key) is not None])

    out = {f"{arm}_speedup_median": med("speedup"), f"{arm}_vs_sot_median": med("vs_sot"),
           f"{arm}_length_ratio_median": med("length_ratio"),
           f"{arm}_coverage_median": _median([c for r in recs if (c := r["coverage"].get("normal_in_sot")) is not None])}
    if any(r.get("skeleton_hidden_share") is not None for r in recs):
        out[f"{arm}_skeleton_hidden_share_median"] = med("skeleton_hidden_share")
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """report.json's summary: overall, SoT-suited, per category, auto overhead, routing checks, targets."""
    overall = _group(rows)
    suited_rows = [r for r in rows if r["category"] in SOT_SUITED]
    suited = {"categories": list(SOT_SUITED), **_group(suited_rows)}
    cats = [c for c in CATEGORIES if any(r["category"] == c for r in rows)]
    cats += sorted({r["category"] for r in rows} - set(cats))
    by_category = {c: _group([r for r in rows if r["category"] == c]) for c in cats}

    # Auto routed to normal: the same greedy decoding as the baseline, so the difference is vivace's own cost
    # (router, graph) plus run-to-run noise.
    routed_normal = [r for r in rows if r["mode_auto"] == "normal"]
    overheads = [r["auto"]["latency_s"] / r["normal"]["latency_s"] - 1 for r in routed_normal if r["normal"]["latency_s"]]
    deltas_ms = [(r["auto"]["latency_s"] - r["normal"]["latency_s"]) * 1000 for r in routed_normal]
    same_tokens = sum(1 for r in routed_normal if r["auto"]["output_tokens"] == r["normal"]["output_tokens"])
    worst = max(routed_normal, key=lambda r: r["auto"]["latency_s"] / r["normal"]["latency_s"], default=None)
    auto_normal = {
        "n": len(routed_normal),
        "overhead_median": _median(overheads),
        "overhead_max": round(max(overheads), 4) if overheads else None,
        "overhead_max_id": worst["id"] if worst else None,
        "delta_median_ms": _median(deltas_ms),
        "route_median_ms": _median([r["auto"]["route_s"] * 1000 for r in routed_normal if r["auto"]["route_s"] is not None]),
        "same_output_tokens": same_tokens,
    }
    misrouted = [r["id"] for r in rows if r["category"] in NEVER_SOT and r["mode_auto"] == "sot"]
    checked = [r for r in rows if r["category"] in NEVER_SOT]
    routing = {
        "math_coding_checked": len(checked),
        "math_coding_routed_sot": misrouted,
        "math_coding_never_sot": not misrouted,
        "routed_sot_by_category": {c: g["routed_sot"] for c, g in by_category.items()},
    }

    def check(value: float | None, ok: Callable[[float], bool]) -> bool | None:
        return None if value is None else bool(ok(value))

    targets = {
        "speedup_sot_suited_median>=2.5": check(suited["speedup_sot_median"], lambda v: v >= TARGETS["speedup_sot_suited_median_min"]),
        "length_ratio_suited_median>=0.8": check(suited["length_ratio_median"], lambda v: v >= TARGETS["length_ratio_suited_median_min"]),
        "coverage_suited_median>=0.8": check(suited["coverage_median"], lambda v: v >= TARGETS["coverage_suited_median_min"]),
        "auto_normal_overhead_median<=5%": check(auto_normal["overhead_median"], lambda v: v <= TARGETS["auto_normal_overhead_median_max"]),
        "auto_normal_overhead_max<=25%": check(auto_normal["overhead_max"], lambda v: v <= TARGETS["auto_normal_overhead_max_max"]),
        "math_coding_never_sot": (not misrouted) if checked else None,
    }
    if suited.get("pipelined_speedup_median") is not None:  # the same bar for pipelined SoT, when it ran
        targets["pipelined_speedup_suited_median>=2.5"] = check(
            suited["pipelined_speedup_median"], lambda v: v >= TARGETS["speedup_sot_suited_median_min"])
        targets["pipelined_length_ratio_suited_median>=0.8"] = check(
            suited["pipelined_length_ratio_median"], lambda v: v >= TARGETS["length_ratio_suited_median_min"])
    return {
        "speedup_sot_median": overall["speedup_sot_median"],
        "speedup_auto_median": overall["speedup_auto_median"],
        "length_ratio_median": overall["length_ratio_median"],
        "fallbacks": overall["fallbacks"],
        "n": overall["n"],
        "normal_truncated": overall["normal_truncated"],
        "speedup_sot_median_untruncated": overall["speedup_sot_median_untruncated"],
        "overall": overall,
        "suited": suited,
        "auto_routed_normal": auto_normal,
        "routing": routing,
        "targets": targets,
        "by_category": by_category,
    }


async def warm_up(backend: Any, opts: dict[str, Any]) -> None:
    """Load the router's embedder and run the engine once in each mode; nothing here is reported."""
    import asyncio

    from vivace.agents import ask
    from vivace.agents.sot.router import route, warm

    await asyncio.to_thread(warm)
    # The controller routes on the default executor's worker threads, and the embedder's first call on
    # each new thread costs ~0.6 s here (per-thread torch start-up): touch every worker thread once.
    workers = min(32, (os.cpu_count() or 1) + 4)
    for _ in range(2):
        await asyncio.gather(*(asyncio.to_thread(route, WARMUP_QUESTION) for _ in range(workers)))
    for mode in ("normal", "sot"):
        await ask(WARMUP_QUESTION, backend, mode=mode, **{**opts, "max_tokens": min(64, opts["max_tokens"])})


# The reference arm: a second normal answer under another, equally neutral instruction.
REFERENCE_SYSTEM = "You are a helpful assistant. Answer the user's question."


async def reference_record(backend: Any, question: str, opts: dict[str, Any], normal: dict[str, Any],
                           score: bool) -> dict[str, Any]:
    """How much of the normal answer a second normal answer carries: the ceiling coverage can be read against.

    Two normal decodings that differ only in a neutral system prompt are both
    "the normal answer"; what they share is as much as any other decoding of
    the question (SoT included) can be expected to share with one of them.
    """
    import asyncio

    from vivace_bench.coverage import mutual as coverage_of
    from vivace.runtime.backend import GenerationRequest
    from vivace.runtime.call import complete

    request = GenerationRequest(
        messages=[{"role": "system", "content": REFERENCE_SYSTEM}, {"role": "user", "content": question}],
        max_tokens=opts["max_tokens"], temperature=0.0, repetition_penalty=opts["repetition_penalty"],
        tag="bench-sot/reference")
    result = await complete(backend, request)
    cov = await asyncio.to_thread(coverage_of, normal["answer"], result.text) if score else {}
    return {"output_tokens": result.output_tokens, "latency_s": round(result.e2e_s, 4),
            "length_ratio": round(result.output_tokens / normal["output_tokens"], 4) if normal["output_tokens"] else None,
            "coverage": cov, "answer": result.text}


def _bench_runtime(backend: Any, out_dir: Path | None) -> tuple[Any, Any]:
    """The runtime the questions run on (it saves no runs) and the length history its plans learn from.

    The history starts empty (``out_dir/length-history.jsonl``), the way it does
    on a fresh install, and fills with this run's normal answers; a question's
    own answer never plans its own SoT run (``vivace.agents.sot.length_plan``).
    """
    import tempfile

    from vivace.agents.sot.length_plan import LengthHistory
    from vivace.assembly import runtime_for
    from vivace.config import Config

    runtime = runtime_for(Config(), backend, save_runs=False)
    lengths = LengthHistory(out_dir if out_dir is not None else Path(tempfile.mkdtemp()), "length-history")
    lengths.path.unlink(missing_ok=True)
    return runtime, lengths


async def run_bench(
    backend: Any,
    questions: list[dict[str, str]],
    *,
    max_tokens: int,
    repetition_penalty: float,
    max_points: int,
    out_dir: Path | None = None,
    base_report: dict[str, Any] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    warm: bool = True,
    score: bool = True,
    pipelined: bool = False,
    unplanned: bool = False,
    reference: bool = False,
    judge: Any = None,
) -> dict[str, Any]:
    """Run every question in three modes and return the report; rewrite ``out_dir/report.json`` as it goes.

    ``score`` adds the content coverage of each SoT answer (``vivace_bench.coverage``, MiniLM);
    ``pipelined`` a fourth run per question, pipelined SoT (``vivace.agents.sot.points``);
    ``unplanned`` one more, SoT without its length plan (``vivace.agents.sot.length_plan``), the ablation;
    ``reference`` a second normal answer under another neutral instruction (``reference_record``);
    ``judge`` (a backend) a pairwise verdict on SoT's answer against normal's (``vivace_bench.sot_judge``).
    """
    import asyncio

    from vivace.agents import ask
    from vivace.agents.sot.length_plan import own_history
    from vivace_bench.coverage import mutual as coverage_of

    opts: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0.0, "repetition_penalty": repetition_penalty, "max_points": max_points}
    report: dict[str, Any] = dict(base_report or {})
    report["bench"] = "sot"
    report.setdefault("config", {})
    report["config"].update(
        max_tokens=max_tokens, temperature=0.0, repetition_penalty=repetition_penalty, max_points=max_points,
        order=f"normal, sot, auto{', sot pipelined' if pipelined else ''}{', sot unplanned' if unplanned else ''}"
              f"{', normal reference' if reference else ''} per question; "
              "questions round-robin over categories",
        backend=backend.name, model=backend.model, questions_planned=len(questions),
        judge=f"{judge.name}:{judge.model}" if judge is not None else None,
    )
    report["load_average_start"] = [round(x, 2) for x in os.getloadavg()]
    if warm:
        await warm_up(backend, opts)
    runtime, lengths = _bench_runtime(backend, out_dir)
    report["config"]["length_history"] = str(lengths.path)
    with own_history(lengths):
        rows: list[dict[str, Any]] = []
        report["questions"] = rows
        for q in questions:
            traces = {}
            for mode in ("normal", "sot", "auto"):
                traces[mode] = await ask(q["question"], runtime, mode=mode, **opts)
            cov = await asyncio.to_thread(coverage_of, traces["normal"].answer, traces["sot"].answer) if score else None
            row = question_record(q, traces["normal"], traces["sot"], traces["auto"], cov)
            if pipelined:
                piped = await ask(q["question"], runtime, mode="sot", pipelined=True, **opts)
                cov = await asyncio.to_thread(coverage_of, traces["normal"].answer, piped.answer) if score else None
                row["pipelined"] = arm_record(piped, row, cov)
            if unplanned:
                bare = await ask(q["question"], runtime, mode="sot", length_plan=False, **opts)
                cov = await asyncio.to_thread(coverage_of, traces["normal"].answer, bare.answer) if score else None
                row["unplanned"] = arm_record(bare, row, cov)
            if reference:
                row["reference"] = await reference_record(backend, q["question"], opts, row["normal"], score)
            if judge is not None:
                from vivace_bench.sot_judge import judge_pair

                row["judge"] = await judge_pair(judge, q["question"], traces["normal"].answer, traces["sot"].answer)
                if pipelined:
                    row["pipelined"]["judge"] = await judge_pair(judge, q["question"], traces["normal"].answer, piped.answer)
            rows.append(row)
            report["summary"] = summarize(rows)
            report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
            report["complete"] = len(rows) == len(questions)
            if out_dir is not None:
                write_report(out_dir, report)
            if progress:
                progress(row)
        if not rows:
            report["summary"] = summarize(rows)
        return report


def plot(report: dict[str, Any], path: Path) -> Path | None:
    """Per-category bars: median SoT and auto speedup, and the SoT/normal length ratio."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no %s", path.name)
        return None
    groups = report["summary"]["by_category"]
    cats = list(groups)
    if not cats:
        return None
    xs = range(len(cats))
    width = 0.27
    fig, ax = plt.subplots(figsize=(max(7.0, 1.0 * len(cats) + 2), 4.2))

    def vals(key: str) -> list[float]:
        return [groups[c][key] or 0.0 for c in cats]

    ax.bar([x - width for x in xs], vals("speedup_sot_median"), width, label="SoT speedup (median)", color="#3b7dd8")
    ax.bar(list(xs), vals("speedup_auto_median"), width, label="auto speedup (median)", color="#8cc084")
    ax.bar([x + width for x in xs], vals("length_ratio_median"), width, label="SoT/normal length (median)", color="#e0a040")
    ax.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{c}\n(n={groups[c]['n']})" for c in cats], fontsize=8)
    ax.set_ylabel("x (normal = 1)")
    cfg = report.get("config", {})
    done = sum(g["n"] for g in groups.values())
    planned = cfg.get("questions_planned") or done
    partial = f" (partial: {done} of {planned})" if done < planned else ""
    ax.set_title(f"SoT vs normal, {cfg.get('model', '')}, greedy, {cfg.get('max_tokens')} tokens{partial}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
