"""Skeleton parsing and expansion clean-up, robust to what a small model writes.

A 135M model numbers its points with "." or ")", uses "-" or "*" bullets,
runs several points together on one line, repeats points, restarts the list,
and echoes the skeleton inside an expansion. Everything here is pure text
processing so it can be tested on a table of messy outputs without a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_MAX_POINTS = 8
MIN_POINTS = 2
MAX_POINT_WORDS = 12

# "1. x", "1) x", "(1) x", "Point 1: x", "Step 1 - x", with optional markdown bold around it.
_NUMBERED = re.compile(
    r"^\s*(?:[#>]+\s*)?(?:\*\*)?\s*(?:(?:point|step|part)\s+)?\(?(\d{1,2})\s*[.):\-]\s*(?:\*\*)?\s*(.*)$",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^\s*(?:[-*•+]|\u2013|\u2014)\s+(?:\*\*)?(.*)$")
# A point marker inside a line; used to split run-on lines ("1. a 2. b 3. c").
_INLINE_NUMBER = re.compile(r"(?:(?<=\s)|^)\(?(\d{1,2})[.)]\s+")
_HEADER = re.compile(r"^\s*(?:skeleton|outline|answer|points?)\s*:?\s*$", re.IGNORECASE)


@dataclass
class Skeleton:
    """The usable points of a skeleton, or why there are too few to expand."""

    points: list[str]
    raw: str = ""
    fallback: str | None = None
    dropped: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.fallback is None


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _norm(text: str) -> str:
    """A comparison key: lower case, letters and digits only."""
    return _NON_ALNUM.sub(" ", text.lower()).strip()


def clean_point(text: str) -> str:
    """Strip markdown and trailing punctuation; keep at most ``MAX_POINT_WORDS`` words."""
    text = text.replace("**", "").replace("__", "").replace("`", "")
    text = re.sub(r"\s+", " ", text).strip()
    text = text.strip(" \t-*•:;,")
    words = text.split()
    if len(words) > MAX_POINT_WORDS:
        text = " ".join(words[:MAX_POINT_WORDS])
    return text.rstrip(" .:;,")


def _split_run_on(text: str, first: int) -> list[tuple[int, str]]:
    """Split "a 2. b 3. c" into numbered parts, only where the numbers run in sequence."""
    parts: list[tuple[int, str]] = []
    number, start, expected = first, 0, first + 1
    for match in _INLINE_NUMBER.finditer(text):
        if match.start() == 0 or int(match.group(1)) != expected:
            continue
        parts.append((number, text[start : match.start()]))
        number, start, expected = expected, match.end(), expected + 1
    parts.append((number, text[start:]))
    return parts


def _numbered_items(lines: list[str]) -> list[tuple[int, str]]:
    items: list[tuple[int, str]] = []
    pending: int | None = None  # a marker alone on its line takes the next line as its text
    for line in lines:
        match = _NUMBERED.match(line)
        if match:
            number, rest = int(match.group(1)), match.group(2)
            if not rest.strip():
                pending = number
                continue
            items.extend(_split_run_on(rest, number))
            pending = None
        elif pending is not None and line.strip() and not _BULLET.match(line):
            items.extend(_split_run_on(line, pending))
            pending = None
    return items


def parse_skeleton(text: str, max_points: int = DEFAULT_MAX_POINTS, min_points: int = MIN_POINTS) -> Skeleton:
    """The points of a skeleton, de-duplicated and capped, or a fallback reason.

    Numbered items win over bullets (bullets under numbers are sub-points). A
    restart of the numbering at 1 ends the list: the model is repeating itself.
    """
    if max_points < 1 or min_points < 1:
        raise ValueError(f"max_points and min_points must be at least 1, got {max_points} and {min_points}")
    lines = [line for line in text.replace("\r", "").split("\n") if not _HEADER.match(line)]
    numbered = _numbered_items(lines)
    candidates: list[str] = []
    if numbered:
        last = 0
        for number, body in numbered:
            if number == 1 and last >= 1:
                break  # the list starts over
            last = number
            candidates.append(body)
    else:
        candidates = [m.group(1) for m in map(_BULLET.match, lines) if m]
    points: list[str] = []
    dropped: list[str] = []
    seen: set[str] = set()
    for body in candidates:
        point = clean_point(body)
        key = _norm(point)
        if len(key) < 2 or key in seen:
            dropped.append(body.strip())
            continue
        seen.add(key)
        points.append(point)
    if len(points) > max_points:
        dropped.extend(points[max_points:])
        points = points[:max_points]
    fallback: str | None = None
    if not points:
        fallback = "no list in the skeleton" if not candidates else "no usable point in the skeleton"
    elif len(points) < min_points:
        fallback = f"only {len(points)} usable point(s) in the skeleton (need {min_points})"
    return Skeleton(points=points, raw=text, fallback=fallback, dropped=dropped)


def strip_echo(text: str, index: int, points: list[str]) -> str:
    """An expansion of point ``index`` (1-based) with echoed or other points cut off.

    The expansion is continued from a prefill of the point's own title, so a
    repeat of that title at its start is dropped, and the text is cut at the
    first line that starts another numbered point or repeats another point.
    """
    own = _norm(points[index - 1]) if 0 < index <= len(points) else ""
    others: set[str] | None = None  # the other points' keys, built at the second line: most expansions have one
    body = text.replace("\r", "")
    # A leading copy of the point's own title (model restarts the prefill).
    lead = re.match(rf"^\s*(?:\*\*)?\s*{index}\s*[.)]\s*", body)
    if lead:
        body = body[lead.end():]
    if own:
        head = body.lstrip(" \n*:")
        first, _, rest = head.partition("\n")
        if _norm(first) == own:
            body = rest
        elif _norm(first).startswith(own + " ") and len(first) > len(points[index - 1]):
            body = head[len(first) - len(first.lstrip()) :]
    kept: list[str] = []
    for i, line in enumerate(body.split("\n")):
        match = _NUMBERED.match(line)
        if match and (i > 0 or int(match.group(1)) != index):
            break  # another point starts: the model is writing or echoing the skeleton
        if i > 0 and others is None:
            others = {key for j, p in enumerate(points, 1) if j != index and (key := _norm(p))}
        if i > 0 and others and _norm(line) in others:
            break
        kept.append(line)
    result = "\n".join(kept)
    # Run-on echo inside one line: " 3. Next point" right after a sentence.
    nxt = re.search(rf"(?:(?<=[.!?])\s+|\s+\(?){index + 1}[.)]\s+\S", result)
    if nxt:
        result = result[: nxt.start()]
    # Bullet or colon the model opens with after the prefilled title.
    return re.sub(r"^[\s\-*•:;,\u2013\u2014]+", "", result).strip()


def format_point(index: int, point: str, body: str, error: str | None = None) -> str:
    """One point of the final answer, exactly as ``join_points`` writes it (the server streams these)."""
    if error is not None:
        return f"{index}. {point}: [this point failed: {error}]"
    body = body.strip()
    if not body:
        return f"{index}. {point}."
    if body[0].islower() or body[0] in "(,;":
        return f"{index}. {point} {body}"  # the expansion continues the title's sentence
    return f"{index}. {point}: {body}"


def join_points(points: list[str], expansions: dict[int, str], failed: dict[int, str] | None = None) -> str:
    """The final answer: one numbered paragraph per point, in point order."""
    failed = failed or {}
    return "\n".join(format_point(i, point, expansions.get(i, ""), failed.get(i)) for i, point in enumerate(points, 1))


def trim_partial_sentence(text: str) -> str:
    """Drop a sentence cut by the token cap, when a complete one comes before it."""
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[: ends[-1]] if ends and ends[-1] >= len(text) // 3 else text
