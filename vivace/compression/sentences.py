"""Sentence splitting with offsets, shared by coarse compression and retrieval's chunker.

Why here: coarse compression ranks sentences and retrieval packs them into
chunks; the splitter lives in the lower of the two (compression) so that
compression never imports retrieval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# End of sentence: ., ! or ? (optionally closed by quotes/brackets) then space;
# or a blank line; or a markdown heading / list item starting a new line.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n+|\n(?=\s*(?:#{1,6}\s|[-*+]\s|\d+[.)]\s))")


@dataclass(frozen=True)
class Span:
    """A piece of a text with its character offset."""

    text: str
    start: int


def split_sentences(text: str) -> list[Span]:
    """Sentences (and headings, list items, paragraphs) with their offsets; never empty pieces."""
    spans: list[Span] = []
    pos = 0
    for match in _SENTENCE_END.finditer(text):
        piece = text[pos : match.start()]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append(Span(piece.strip(), pos + lead))
        pos = match.end()
    tail = text[pos:]
    if tail.strip():
        spans.append(Span(tail.strip(), pos + len(tail) - len(tail.lstrip())))
    return spans
