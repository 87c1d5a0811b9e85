"""`vivace bench router`: how well the SoT router routes a labelled set, and how fast it decides.

Why a bench of its own: the router's mistakes are asymmetric. A question sent
to SoT that needs normal decoding (a letter, a sum, a proof) loses quality; a
list-shaped question sent to normal decoding only loses the speedup. So the
report gives precision and recall of both labels, the share of math, coding,
writing, reasoning and estimate questions routed to SoT (the target is 0), a
per-category confusion, every misrouted question, and the decision time after
the first load (median and p95; the target is under 1 ms). The default set is
the bundled held-out file, which the router's examples do not contain.
"""

from __future__ import annotations

import logging
import os
import re
import time
import unicodedata
from importlib import resources
from pathlib import Path
from typing import Any, Callable, cast

from vivace.agents.sot.router import NORMAL, SOT, Example, load_examples, parse_examples
from vivace.errors import InputError
from vivace_bench.backend_bench import machine_info
from vivace_bench.stats import median, percentile

log = logging.getLogger(__name__)

HELDOUT = "router_heldout.tsv"
# Categories whose answers must never go to SoT (the Auto-mode target); "fermi" is the paper's estimates.
UNSUITED = ("math", "coding", "writing", "reasoning", "fermi", "estimate")
TARGET_DECISION_MS = 1.0

Router = Callable[[str], tuple[str, str]]


def load_labelled(path: Path | None = None) -> tuple[list[Example], str]:
    """The labelled questions to measure and where they came from: ``path``, or the bundled held-out set."""
    if path is None:
        text, source = resources.files("vivace_bench").joinpath("data", HELDOUT).read_text(encoding="utf-8"), HELDOUT
    else:
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read --questions {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        items = parse_examples(text, source)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if not items:
        raise InputError(f"{source}: no labelled questions (label<TAB>category<TAB>question per line)")
    return items, source


def normalise(question: str) -> str:
    """A question reduced to lower-case words, for exact-overlap checks between labelled sets."""
    text = unicodedata.normalize("NFKC", question).casefold()
    return " ".join(re.findall(r"\w+", text))


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def score(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Precision/recall per label, accuracy, per-category confusion and the misrouted rows.

    Each row has ``label`` (the truth), ``routed`` (the router's), ``category``
    and ``question``. A precision with nothing predicted, or a recall with
    nothing to find, is None rather than a made-up 0 or 1.
    """
    labels: dict[str, dict[str, Any]] = {}
    for label in (SOT, NORMAL):
        tp = sum(r["label"] == label and r["routed"] == label for r in rows)
        predicted = sum(r["routed"] == label for r in rows)
        actual = sum(r["label"] == label for r in rows)
        labels[label] = {"n": actual, "routed": predicted, "correct": tp,
                         "precision": _ratio(tp, predicted), "recall": _ratio(tp, actual)}
    by_category: dict[str, dict[str, Any]] = {}
    for r in rows:
        cell = by_category.setdefault(r["category"], {"label": r["label"], "n": 0, SOT: 0, NORMAL: 0})
        cell["n"] += 1
        cell[r["routed"]] += 1
    unsuited = [r for r in rows if r["category"] in UNSUITED]
    unsuited_sot = sum(r["routed"] == SOT for r in unsuited)
    return {
        "n": len(rows),
        "accuracy": _ratio(sum(r["label"] == r["routed"] for r in rows), len(rows)),
        "labels": labels,
        "by_category": dict(sorted(by_category.items(), key=lambda kv: (kv[1]["label"] != SOT, kv[0]))),
        "unsuited_n": len(unsuited),
        "unsuited_to_sot": unsuited_sot,
        "unsuited_to_sot_share": _ratio(unsuited_sot, len(unsuited)),
        "misrouted": [{k: r[k] for k in ("category", "label", "routed", "reason", "question")}
                      for r in rows if r["label"] != r["routed"]],
    }


def run_bench(items: list[Example], source: str, *, repeats: int = 3, router: Router | None = None,
              warm: Callable[[], None] | None = None) -> dict[str, Any]:
    """Route every question ``repeats`` times after one warm-up load; score the first pass, time them all.

    ``router``/``warm`` default to the real router; the timings are of the
    decision alone (cue, embedding, vote), after the first load, which is
    reported separately as ``load_s``.
    """
    from vivace.agents.sot import router as real

    if repeats < 1:
        raise InputError("--repeats must be >= 1")
    route_fn = router or real.route
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    (warm or real.warm)()
    load_s = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    times_ms: list[float] = []
    for attempt in range(repeats):
        for item in items:
            t = time.perf_counter()
            mode, reason = route_fn(item.question)
            times_ms.append((time.perf_counter() - t) * 1000)
            if attempt == 0:
                rows.append({"question": item.question, "category": item.category, "label": item.label,
                             "routed": mode, "reason": reason})
    examples = {normalise(e.question) for e in load_examples()} if router is None else set()
    report = {
        "bench": "router",
        "questions": source,
        **score(rows),
        "in_examples": sum(normalise(i.question) in examples for i in items),
        "decided_by_cue": sum(r["reason"].startswith("cue:") for r in rows),
        "decision_ms": {
            "median": median(times_ms),
            "p95": round(cast(float, percentile(times_ms, 0.95)), 4),
            "max": round(max(times_ms), 4),
            "n": len(times_ms),
            "target": TARGET_DECISION_MS,
        },
        "load_s": round(load_s, 3),
        "rows": rows,
        "machine": {**machine_info(), "load_average_start": [round(x, 2) for x in load_start],
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return report
