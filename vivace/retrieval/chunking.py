"""Sentence-aware chunking and the content-hash ids that make ingest idempotent.

Why sentence-aware: a chunk cut mid-sentence splits the very fact a question
asks about, and MiniLM truncates past 256 word pieces, so chunks are packed
from whole sentences up to a token budget, with a sentence-level overlap.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable

from vivace.compression.sentences import Span, split_sentences

__all__ = ["Span", "TextChunk", "chunk_id", "chunk_text", "split_sentences"]


@dataclass(frozen=True)
class TextChunk:
    text: str
    index: int
    start: int
    tokens: int

    @property
    def id(self) -> str:
        return chunk_id(self.text)


def chunk_id(text: str) -> str:
    """Same text, same id: re-ingesting upserts nothing new."""
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()[:32]


def _split_long(span: Span, max_tokens: int, count: Callable[[str], int]) -> list[Span]:
    """A sentence longer than a chunk is cut at word boundaries."""
    words = list(re.finditer(r"\S+", span.text))
    out: list[Span] = []
    i = 0
    while i < len(words):
        j = i + 1
        while j < len(words) and count(span.text[words[i].start() : words[j].end()]) <= max_tokens:
            j += 1
        out.append(Span(span.text[words[i].start() : words[j - 1].end()], span.start + words[i].start()))
        i = j
    return out


def chunk_text(
    text: str, max_tokens: int, overlap: int, count: Callable[[str], int]
) -> list[TextChunk]:
    """Pack whole sentences into chunks of at most ``max_tokens``; repeat up to ``overlap`` tokens."""
    if max_tokens < 8:
        raise ValueError("chunk size must be at least 8 tokens")
    overlap = max(0, min(overlap, max_tokens // 2))
    sentences: list[tuple[Span, int]] = []
    for span in split_sentences(text):
        n = count(span.text)
        if n > max_tokens:
            sentences.extend((s, count(s.text)) for s in _split_long(span, max_tokens, count))
        else:
            sentences.append((span, n))
    chunks: list[TextChunk] = []
    i = 0
    while i < len(sentences):
        j, total = i, 0
        while j < len(sentences) and (j == i or total + sentences[j][1] + 1 <= max_tokens):
            total += sentences[j][1] + (1 if j > i else 0)
            j += 1
        body = " ".join(s.text for s, _ in sentences[i:j])
        chunks.append(TextChunk(body, len(chunks), sentences[i][0].start, total))
        if j >= len(sentences):
            break
        # Step back over trailing sentences that fit in the overlap, but always advance.
        back, k = 0, j
        while k - 1 > i and back + sentences[k - 1][1] <= overlap:
            back += sentences[k - 1][1]
            k -= 1
        i = k
    return chunks
