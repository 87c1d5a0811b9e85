"""What `vivace bench sot` keeps of each run: one record per mode, and a question's row across modes.

Why apart from the bench loop: the records are the report's schema, read by
the summaries, the plot and ``vivace report``; the loop only runs questions.
"""

from __future__ import annotations

from typing import Any


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _cached(trace: Any) -> int | None:
    vals = [c.cached_tokens for c in trace.calls if c.cached_tokens is not None]
    return sum(vals) if vals else None


def normal_record(trace: Any) -> dict[str, Any]:
    calls = [c for c in trace.calls if c.node == "normal"]
    return {
        "latency_s": round(trace.latency_s, 4),
        "output_tokens": trace.output_tokens,
        "truncated": any(c.finish_reason == "length" for c in calls),
        "finish_reason": calls[-1].finish_reason if calls else None,
        "ttft_s": round(trace.ttft_s, 4) if trace.ttft_s is not None else None,
        "cached_tokens": _cached(trace),
        "answer": trace.answer,
    }


def sot_record(trace: Any) -> dict[str, Any]:
    skeleton = [c for c in trace.calls if c.node == "skeleton"]
    expand = [c for c in trace.calls if c.node == "expand"]
    normal = [c for c in trace.calls if c.node == "normal"]  # a fallback's normal decoding
    sot = trace.sot or {}
    stages = sot.get("stages") or {}
    return {
        "latency_s": round(trace.latency_s, 4),
        "output_tokens": trace.output_tokens,
        "points": len(trace.points),
        # Any call of the answer that hit its cap: a point expansion, or the fallback's normal decoding.
        "truncated": any(c.finish_reason == "length" for c in expand + normal),
        "truncated_points": sum(1 for c in expand if c.finish_reason == "length"),
        "skeleton_truncated": any(c.finish_reason == "length" for c in skeleton),
        "fallback": sot.get("fallback"),
        "failed_points": len(sot.get("failed_points") or {}),
        "skeleton_tokens": sum(c.output_tokens for c in skeleton),
        "expansion_tokens": sum(c.output_tokens for c in expand),
        "skeleton_s": round(stages["skeleton"], 4) if "skeleton" in stages else None,
        "expand_s": round(stages["expand"], 4) if "expand" in stages else None,
        "ttft_s": round(trace.ttft_s, 4) if trace.ttft_s is not None else None,
        "cached_tokens": _cached(trace),
        "length_plan": sot.get("length_plan"),  # vivace.agents.sot.length_plan: expected length, points asked
        "answer": trace.answer,
    }


def auto_record(trace: Any) -> dict[str, Any]:
    router, sot = trace.router or {}, trace.sot or {}
    stages = sot.get("stages") or {}
    return {
        "latency_s": round(trace.latency_s, 4),
        "output_tokens": trace.output_tokens,
        "routed": router.get("mode"),
        "reason": router.get("reason"),
        "mode": trace.mode,  # "normal" also when the skeleton fell back
        "fallback": sot.get("fallback"),
        "route_s": round(stages["route"], 6) if "route" in stages else None,
        "truncated": any(c.finish_reason == "length" for c in trace.calls if c.node in ("normal", "expand")),
        "cached_tokens": _cached(trace),
    }


def arm_record(trace: Any, row: dict[str, Any], coverage: dict[str, float | None] | None) -> dict[str, Any]:
    """An extra SoT arm (pipelined, or without the length plan) beside the same question's normal and SoT runs."""
    rec = sot_record(trace)
    stages = (trace.sot or {}).get("stages") or {}
    hidden = stages.get("skeleton_hidden")
    rec.update(
        skeleton_hidden_s=round(hidden, 4) if hidden is not None else None,
        skeleton_hidden_share=ratio(hidden, stages["skeleton"]) if hidden is not None and stages.get("skeleton") else None,
        speedup=ratio(row["normal"]["latency_s"], rec["latency_s"]),
        vs_sot=ratio(row["sot"]["latency_s"], rec["latency_s"]),
        length_ratio=ratio(rec["output_tokens"], row["normal"]["output_tokens"]),
        coverage=coverage or {},
    )
    return rec


def question_record(
    q: dict[str, str], normal: Any, sot: Any, auto: Any, coverage: dict[str, float | None] | None = None
) -> dict[str, Any]:
    n, s, a = normal_record(normal), sot_record(sot), auto_record(auto)
    return {
        "id": q["id"],
        "category": q["category"],
        "question": q["question"],
        "mode_auto": a["routed"],
        "normal": n,
        "sot": s,
        "auto": a,
        "speedup_sot": ratio(n["latency_s"], s["latency_s"]),
        "speedup_auto": ratio(n["latency_s"], a["latency_s"]),
        "length_ratio": ratio(s["output_tokens"], n["output_tokens"]),
        # vivace_bench.coverage: how much of the normal answer's content SoT's carries, and the reverse
        "coverage": coverage or {},
    }
