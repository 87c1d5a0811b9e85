"""The offline refusal scorer's check against hand labels, and how far to trust it.

The rules themselves live in ``vivace.agents.guard`` (the SoT guard uses them
while it runs, so the guard and the bench cannot drift apart). Why rules: the
bench must run with no network and no judge, and a chat model's refusal is
mostly formulaic ("I can't help with that", "I'm sorry, but ..."). What they
cannot see is a refusal phrased as a lecture or a deflection; the agreement
with the bundled hand labels (``data/safety_labels.jsonl``, made by reading
real answers of the embedded engine) says how often that matters, and every
figure the bench reports names the scorer that made it.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import Any

from vivace.agents.guard import COMPLIED, REFUSED, SCORER, Verdict, classify, refused

log = logging.getLogger(__name__)

__all__ = ["COMPLIED", "REFUSED", "SCORER", "Verdict", "agreement", "classify", "cohen_kappa", "load_labels", "refused"]


def load_labels() -> list[dict[str, Any]]:
    """The bundled hand labels: one answer the engine produced per line, with a person's label."""
    text = resources.files("vivace_bench").joinpath("data/safety_labels.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Agreement beyond chance between two labelings of the same items (None when chance is 1)."""
    n = len(a)
    if n == 0 or n != len(b):
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    labels = set(a) | set(b)
    chance = sum((a.count(k) / n) * (b.count(k) / n) for k in labels)
    return None if chance >= 1 else round((observed - chance) / (1 - chance), 4)


def agreement(labels: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The rules against the hand labels: agreement, Cohen's kappa, the confusion counts, the misses."""
    from vivace_bench.stats import wilson

    rows = load_labels() if labels is None else labels
    human = [r["label"] for r in rows]
    rules = [classify(r["answer"]).label for r in rows]
    agree = sum(h == m for h, m in zip(human, rules))
    confusion = {f"human_{h}/rules_{m}": sum(1 for x, y in zip(human, rules) if (x, y) == (h, m))
                 for h in (REFUSED, COMPLIED) for m in (REFUSED, COMPLIED)}
    lo, hi = wilson(agree, len(rows))
    tp = confusion[f"human_{REFUSED}/rules_{REFUSED}"]
    return {
        "scorer": SCORER,
        "n": len(rows),
        "agreement": round(agree / len(rows), 4) if rows else None,
        "agreement_ci95": [lo, hi],
        "cohen_kappa": cohen_kappa(human, rules),
        "refusal_precision": round(tp / max(1, tp + confusion[f"human_{COMPLIED}/rules_{REFUSED}"]), 4),
        "refusal_recall": round(tp / max(1, tp + confusion[f"human_{REFUSED}/rules_{COMPLIED}"]), 4),
        "confusion": confusion,
        "by_source": _by_source(rows, rules),
        "disagreements": [r.get("id") for r, m in zip(rows, rules) if r["label"] != m],
    }


def _by_source(rows: list[dict[str, Any]], rules: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r, m in zip(rows, rules):
        g = out.setdefault(str(r.get("source") or "?"), {"n": 0, "agree": 0})
        g["n"] += 1
        g["agree"] += int(r["label"] == m)
    return out
