"""What every compressor returns, and the spans no compressor may drop.

Why an ``Embedder`` protocol: coarse compression needs sentence vectors, and
retrieval owns the embedder; compression sits below retrieval, so it takes
any object with ``encode`` and the caller hands in retrieval's.

Why protected spans: small scorers find numbers and names "surprising" only
some of the time, yet these are exactly what questions ask about (the
environment notes record llmlingua mangling numbers). Digits, likely named
entities, and spans the caller marks are therefore never pruned.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Protocol, TypeVar

import numpy as np

TokenCounter = Callable[[str], int]
CHARS_PER_TOKEN = 4  # the usual rule of thumb for English with BPE tokenizers


class Embedder(Protocol):
    """Sentence vectors for coarse compression: unit-length rows, one per text."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Counting:
    """A token counter that says whether it counts as the target model does.

    ``exact`` is False for an estimate (no tokenizer in process), so a caller
    can record that budgets and ratios were measured in estimated tokens.
    """

    count: TokenCounter
    exact: bool
    source: str

    def __call__(self, text: str) -> int:
        return self.count(text)


def estimate_tokens(text: str) -> int:
    """About one token per ``CHARS_PER_TOKEN`` characters (rounded up)."""
    return -(-len(text) // CHARS_PER_TOKEN)

KEEP_OPEN, KEEP_CLOSE = "<keep>", "</keep>"
_MARKED = re.compile(re.escape(KEEP_OPEN) + r"(.*?)" + re.escape(KEEP_CLOSE), re.S)
_DIGITS = re.compile(r"\S*\d\S*")
# A capitalized word or an acronym; sentence-initial function words are filtered below.
_CAPITAL = re.compile(r"\b[A-Z][\w'’-]*(?:[ \t]+(?:(?:of|de|van|von|da|la|le)[ \t]+)?[A-Z][\w'’-]*)*")
_COMMON = frozenset(
    """a an the this that these those it its he she they we you i in on at of for to from by with as
    and but or if when while after before then there here what which who whom whose where why how
    is are was were be been has have had do does did not no yes all some any each every many most
    one two three first second also however although because since so thus yet our their his her my
    your me him them us question answer context""".split()
)


@dataclass
class CompressionStats:
    """``ratio`` is original/compressed tokens (2.0 means "2x"); seconds are wall time."""

    original_tokens: int
    compressed_tokens: int
    ratio: float
    seconds: float
    method: str
    budget_tokens: int | None = None
    protected_tokens: int = 0
    counted: str = "exact"  # or "estimate": tokens counted without the target model's tokenizer
    stages: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def make(cls, original: int, compressed: int, seconds: float, method: str, **kw: Any) -> "CompressionStats":
        ratio = original / compressed if compressed else float(original > 0) or 1.0
        return cls(original, compressed, round(ratio, 4), round(seconds, 6), method, **kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def strip_marks(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Remove ``<keep>…</keep>`` markers; return the clean text and the marked char spans."""
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = length = 0
    for m in _MARKED.finditer(text):
        out.append(text[pos : m.start()])
        length += m.start() - pos
        out.append(m.group(1))
        spans.append((length, length + len(m.group(1))))
        length += len(m.group(1))
        pos = m.end()
    out.append(text[pos:])
    return "".join(out), spans


def protected_spans(
    text: str, protect: Iterable[str] = (), digits: bool = True, entities: bool = True
) -> list[tuple[int, int]]:
    """Char spans to keep: given strings (every occurrence), numbers, likely named entities."""
    spans: list[tuple[int, int]] = []
    for s in protect:
        if s:
            spans.extend((m.start(), m.end()) for m in re.finditer(re.escape(s), text))
    if digits:
        spans.extend((m.start(), m.end()) for m in _DIGITS.finditer(text))
    if entities:
        for m in _CAPITAL.finditer(text):
            word = m.group(0)
            if word.lower() not in _COMMON and not (len(word) == 1 and word in "AI"):
                spans.append((m.start(), m.end()))
    return merge_spans(spans)


S = TypeVar("S", int, float)


def merge_spans(spans: Iterable[tuple[S, S]]) -> list[tuple[S, S]]:
    """Overlapping or touching spans merged, in order: character spans here, time spans for the benches."""
    out: list[tuple[S, S]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def overlaps(spans: list[tuple[int, int]], a: int, b: int) -> bool:
    """Whether [a, b) touches any of the sorted, merged spans."""
    import bisect

    i = bisect.bisect_right(spans, (b, b)) - 1
    while i >= 0 and spans[i][1] > a:
        if spans[i][0] < b:
            return True
        i -= 1
    return False
