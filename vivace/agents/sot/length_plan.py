"""Length planning for SoT: how long the normal answer would be, and how to split that length into points.

Why: a SoT answer is only as long as its points let it be. Left alone, the
model writes two or three short points where its normal answer is a list of
ten, so SoT "wins" by writing less. The plan takes the expected length of the
normal answer (learned from this model's own normal answers to similar
questions, ``LengthHistory``), asks the skeleton for as many points as that
length holds at a point's natural size, and gives every point the same budget
with a floor (vLLM's ``min_tokens``), so the branches carry the content and
finish together: the longest point sets the latency.

The history is one JSON line per normal answer under ``<home>/lengths``, per
served model, kept by runs that save their records (``Runtime.save_runs``);
a bench keeps its own (``own_history``). A prediction never uses an answer to the very same question,
so a bench that decodes a question normally before its SoT run does not
learn that question's length from itself.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import re
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

# A point's natural size for a chat model: a heading and two or three sentences.
POINT_TOKENS = 48
# A point's budget: at most two natural points' worth, because the longest branch sets SoT's latency.
POINT_BUDGET_MIN, POINT_BUDGET_MAX = 32, 96
# Auto mode: an answer expected shorter than this is decoded normally; a skeleton and a batch cost more than it saves.
SOT_MIN_EXPECTED = 3 * POINT_TOKENS
FLOOR_SHARE = 0.75  # a point may stop after this share of its budget: the branches end within a quarter of it
# Before any normal answer of this model is on record: a typical long-form chat answer.
PRIOR_TOKENS = 320
NEIGHBOURS = 5
MIN_HISTORY = 3  # fewer answers on record than this: the median of those there are (or the prior)
SENTENCE_TOKENS = 22  # tokens per sentence, to tell the point prompt how much to write

_NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_ASKED_COUNT = re.compile(
    r"\b(\d{1,2}|two|three|four|five|six|seven|eight|nine|ten)\s+(?:\w+\s+)?"
    r"(?:ways|tips|reasons|steps|ideas|things|points|examples|benefits|factors|facts|habits|strategies|"
    r"methods|advantages|disadvantages|differences|signs|rules|questions|items)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class LengthPlan:
    """One run's plan: the normal answer's expected length, the points asked for, and their budgets."""

    expected_tokens: int
    points: int
    source: str  # "history" (nearest normal answers of this model), "median", "prior", or "asked" (the question named a count)

    def point_budget(self, n_points: int) -> tuple[int, int]:
        """Each of ``n_points`` points' (max_tokens, min_tokens): equal shares of the expected length."""
        share = math.ceil(self.expected_tokens / max(1, n_points))
        budget = max(POINT_BUDGET_MIN, min(POINT_BUDGET_MAX, share))
        return budget, int(budget * FLOOR_SHARE)

    def too_short(self) -> bool:
        """Measured answers to questions like this one are too short for SoT to pay (the prior never is)."""
        return self.source == "history" and self.expected_tokens < SOT_MIN_EXPECTED

    def why_short(self) -> str:
        return (f"normal answers to similar questions run ~{self.expected_tokens} tokens, "
                f"under the {SOT_MIN_EXPECTED} where SoT pays")

    def sentences(self, n_points: int) -> int:
        """How many sentences the point prompt asks for, from its budget."""
        return max(2, round(self.point_budget(n_points)[0] / SENTENCE_TOKENS))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def asked_count(question: str) -> int | None:
    """A count the question names itself ("five tips for ..."): the user's plan wins over ours."""
    match = _ASKED_COUNT.search(question)
    if match is None:
        return None
    word = match.group(1).lower()
    return int(word) if word.isdigit() else _NUMBER_WORDS[word]


def plan_points(expected: int, min_points: int, max_points: int) -> int:
    return max(min_points, min(max_points, round(expected / POINT_TOKENS)))


class LengthHistory:
    """This model's normal answers, as (question, output tokens): what "a normal answer" is here."""

    def __init__(self, folder: Path, model: str) -> None:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model or "model").strip("_") or "model"
        self.path = folder / f"{slug}.jsonl"
        self._lock = threading.Lock()
        self._rows: list[tuple[str, int]] | None = None
        self._vectors: Any = None
        self._kinds: dict[str, LengthHistory] = {}

    def of(self, kind: str) -> "LengthHistory":
        """The history of one kind of answer beside this one (a pipeline agent's: a writer's answer to a task
        and an ``ask`` answer to the same words run to different lengths); ``""`` is this one."""
        if not kind:
            return self
        with self._lock:
            return self._kinds.setdefault(kind, LengthHistory(self.path.parent, f"{self.path.stem}-{kind}"))

    def rows(self) -> list[tuple[str, int]]:
        with self._lock:
            if self._rows is None:
                self._rows = self._read()
            return list(self._rows)

    def _read(self) -> list[tuple[str, int]]:
        rows: list[tuple[str, int]] = []
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return rows
        except OSError as exc:
            log.warning("cannot read the length history %s: %s", self.path, exc)
            return rows
        latest: dict[str, int] = {}
        for line in lines:
            try:
                row = json.loads(line)
                latest[str(row["question"]).strip()] = int(row["tokens"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn or foreign line: skipped, the rest still counts
        return list(latest.items())  # one row per question, its latest answer

    def record(self, question: str, tokens: int) -> None:
        """Append one normal answer's length (one short line per append: concurrent runs do not interleave)."""
        if tokens < 1 or not question.strip():
            return
        line = json.dumps({"question": question.strip(), "tokens": int(tokens)}, ensure_ascii=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:
            log.warning("cannot record the answer length in %s: %s", self.path, exc)
            return
        with self._lock:
            if self._rows is not None:
                self._rows = [r for r in self._rows if r[0] != question.strip()] + [(question.strip(), int(tokens))]
                self._vectors = None

    def predict(self, question: str, embed: Any | None) -> tuple[int | None, str]:
        """The expected normal length for ``question`` and where it came from (``None``: nothing on record)."""
        rows = self.rows()
        keep = [i for i, (q, _) in enumerate(rows) if q.strip() != question.strip()]
        if not keep:
            return None, "prior"
        tokens = sorted(rows[i][1] for i in keep)
        if len(keep) < MIN_HISTORY or embed is None:
            return tokens[len(tokens) // 2], "median"
        import numpy as np

        vectors = self._embedded(embed, rows)[keep]
        sims = vectors @ np.asarray(embed([question]))[0]
        nearest = np.argsort(-sims)[:NEIGHBOURS]
        weights = np.maximum(sims[nearest], 1e-3)
        values = np.asarray([rows[keep[i]][1] for i in nearest], dtype=np.float64)
        return int(round(float((weights * values).sum() / weights.sum()))), "history"

    def _embedded(self, embed: Any, rows: list[tuple[str, int]]) -> Any:
        """The rows' question vectors, embedded once and kept until a new row arrives."""
        import numpy as np

        with self._lock:
            vectors = self._vectors
        if vectors is None or len(vectors) != len(rows):
            vectors = np.asarray(embed([q for q, _ in rows]))
            with self._lock:
                self._vectors = vectors
        return vectors


_HISTORIES: dict[Path, LengthHistory] = {}
_HISTORIES_LOCK = threading.Lock()


def history(home: Path, model: str) -> LengthHistory:
    """The process's one history per home and model (its rows are read once, then kept up to date)."""
    probe = LengthHistory(home / "lengths", model)
    with _HISTORIES_LOCK:
        return _HISTORIES.setdefault(probe.path, probe)


def make_plan(question: str, hist: LengthHistory | None, embed: Any | None, max_tokens: int, min_points: int,
              max_points: int) -> LengthPlan:
    """The plan for one question: a count the question names, else the history's expected length."""
    expected, source = (hist.predict(question, embed) if hist is not None else (None, "prior"))
    expected = min(max_tokens, max(POINT_BUDGET_MIN * min_points, expected or PRIOR_TOKENS))
    asked = asked_count(question)
    if asked is not None:
        return LengthPlan(expected_tokens=expected, points=max(1, min(max_points, asked)), source="asked")
    return LengthPlan(expected_tokens=expected, points=plan_points(expected, min_points, max_points), source=source)


_OWN: contextvars.ContextVar["LengthHistory | None"] = contextvars.ContextVar("vivace_length_history", default=None)


@contextmanager
def own_history(hist: LengthHistory) -> Iterator[LengthHistory]:
    """Runs started inside learn from and into ``hist``, not the home's history: a bench's answers are
    not the user's, and its plans start from what the bench itself has seen."""
    token = _OWN.set(hist)
    try:
        yield hist
    finally:
        _OWN.reset(token)


def _history_of(agent: Any, kind: str = "") -> LengthHistory | None:
    """The history the run learns from: the runtime's own, else the home's when the runtime saves runs.

    A runtime that saves no runs (tests, quick scripts) learns nothing either: its
    answers are not the user's, and its plans start from the prior every time.
    ``kind`` names a pipeline agent whose answers are kept apart (``LengthHistory.of``).
    """
    own = _OWN.get()
    if own is not None:
        return own.of(kind)
    runtime = agent.runtime
    if not runtime.save_runs:
        return None
    backend = runtime.backend
    return history(agent.config.home, f"{getattr(backend, 'name', 'backend')}-{getattr(backend, 'model', '')}").of(kind)


async def plan_for(agent: Any, question: str, max_tokens: int, min_points: int, max_points: int,
                   kind: str = "") -> LengthPlan:
    """The plan for a run of ``agent`` (an ``AgentContext``), from its model's history (of ``kind``)."""
    from vivace.agents.sot.router import aembedder

    hist = _history_of(agent, kind)
    embed = None
    if hist is not None and hist.rows():
        try:
            embed = await aembedder()
        except Exception as exc:  # noqa: BLE001 - no embedder: the median of the history still plans
            log.info("length plan without the embedder: %s", exc)
    return make_plan(question, hist, embed, max_tokens, min_points, max_points)


def record_normal(agent: Any, question: str, tokens: int, kind: str = "") -> None:
    """Keep one normal answer's length for the plans of questions like it."""
    hist = _history_of(agent, kind)
    if hist is not None:
        hist.record(question, tokens)
