"""``bench tools``' workload: a fictional fact table, tasks over it, two deterministic tools, and the scoring.

Why fictional: a model must not answer from memory, so every figure in
``data/tools_facts.tsv`` is invented and the only way to an answer is the
tools. Why set latencies: the bench measures orchestration (what runs at
once, what waits on what), so each tool sleeps a fixed time per arguments,
as a database or an API would take, and returns the same result every time.
Each task's expected answer is computed from the table when the tasks load,
from the task's spec (operation, attribute, entities), so it cannot drift
from the table; the loader also checks that the task's text names every
entity and the attribute it asks about.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from vivace.errors import InputError
from vivace.runtime.tools import Tool, tool

KINDS = ("parallel", "chain", "mix")
# attribute -> the words a task about it must contain
ATTRIBUTES = {"population": "population", "area_km2": "area", "founded": "founded", "height_m": "height",
              "prominence_m": "prominence", "first_ascent": "first ascent", "revenue_musd": "revenue",
              "employees": "employees"}
Attribute = Literal["population", "area_km2", "founded", "height_m", "prominence_m", "first_ascent",
                    "revenue_musd", "employees"]
Op = Literal["+", "-", "*", "/"]
LOOKUP_S = (0.4, 0.6, 0.8, 1.0, 1.2)  # a lookup's latency, chosen per (entity, attribute) by a checksum
CALCULATE_S = 0.3
REL_TOL = 0.005  # a number in the answer within 0.5% of the expected one counts (rounding, "1.23 million")


@dataclass(frozen=True)
class Expected:
    """What a correct answer names: the entity (first of the task's candidates mentioned), the number, or both."""

    entity: str | None = None
    number: float | None = None


@dataclass
class ToolTask:
    id: str
    kind: str
    task: str
    expected: Expected
    candidates: list[str] = field(default_factory=list)  # the entities the task names
    spec: dict[str, Any] = field(default_factory=dict)


def _key(entity: str) -> str:
    return " ".join(str(entity).lower().split())


@lru_cache(maxsize=1)
def facts() -> dict[tuple[str, str], tuple[str, float]]:
    """``(entity key, attribute) -> (entity, value)`` from the bundled TSV."""
    text = resources.files("vivace_bench").joinpath("data/tools_facts.tsv").read_text(encoding="utf-8")
    out: dict[tuple[str, str], tuple[str, float]] = {}
    rows = [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]
    for entity, _kind, attribute, value in rows[1:]:
        out[(_key(entity), attribute)] = (entity, float(value))
    return out


def value_of(entity: str, attribute: str) -> float:
    found = facts().get((_key(entity), attribute))
    if found is None:
        known = any(k == _key(entity) for k, _ in facts())
        raise KeyError(f"{entity!r} has no {attribute!r}" if known else f"no entity {entity!r} in the table")
    return found[1]


def _number(x: float) -> float | int:
    """Integers as integers (a model copies ``3499000`` better than ``3499000.0``)."""
    x = round(x, 6)
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


def latency(name: str, arguments: dict[str, Any]) -> float:
    """The seconds a tool call takes, before any scale: fixed per tool and arguments."""
    if name == "lookup":
        key = f"{_key(arguments.get('entity', ''))}|{arguments.get('attribute', '')}"
        return LOOKUP_S[zlib.crc32(key.encode()) % len(LOOKUP_S)]
    return CALCULATE_S


def make_tools(scale: float = 1.0) -> list[Tool]:
    """``lookup`` and ``calculate``, pure, sleeping ``latency(...) * scale`` (tests use a small scale).

    The same objects for the same scale, so a runtime that already holds them takes them again.
    """
    return list(_tools(float(scale)))


@lru_cache(maxsize=None)
def _tools(scale: float) -> tuple[Tool, Tool]:

    @tool(pure=True, name="lookup", timeout_s=30.0)
    async def lookup(entity: str, attribute: Attribute) -> float | int:
        """Look up one figure of a city, mountain or company in the fact table.

        Args:
            entity: the exact name of the city, mountain or company, e.g. "Mount Aldrecht"
            attribute: cities have population, area_km2, founded; mountains height_m, prominence_m, first_ascent; companies revenue_musd, employees, founded
        """
        await asyncio.sleep(latency("lookup", {"entity": entity, "attribute": attribute}) * scale)
        return _number(value_of(entity, attribute))

    @tool(pure=True, name="calculate", timeout_s=30.0)
    async def calculate(a: float, op: Op, b: float) -> float | int:
        """Compute a op b for two numbers: + - * /.

        Args:
            a: the first number
            op: one of + - * /
            b: the second number
        """
        await asyncio.sleep(latency("calculate", {}) * scale)
        if op == "/" and b == 0:
            raise ZeroDivisionError("division by zero")
        return _number({"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else math.nan}[op])

    return lookup, calculate


def expected_of(spec: dict[str, Any]) -> Expected:
    """The answer a spec asks for, computed from the table."""
    op, attribute, entities = spec["op"], spec["attribute"], list(spec["entities"])
    values = [value_of(e, attribute) for e in entities]
    if op in ("max", "min", "max_minus"):
        pool = values[:-1] if op == "max_minus" else values
        best = (max if op != "min" else min)(pool)
        if pool.count(best) != 1:
            raise InputError(f"task {spec.get('id')}: a tie for the {op} of {attribute}")
        winner = entities[pool.index(best)]
        return Expected(winner, abs(best - values[-1]) if op == "max_minus" else None)
    if op == "diff":
        return Expected(None, abs(values[0] - values[1]))
    if op == "sum":
        return Expected(None, sum(values))
    if op == "times":
        return Expected(None, values[0] * float(spec["n"]))
    raise InputError(f"task {spec.get('id')}: unknown op {op!r}")


def load_tasks(kinds: list[str] | tuple[str, ...] = KINDS) -> list[ToolTask]:
    """The bundled tasks of ``kinds``, each with its answer computed from the table now."""
    text = resources.files("vivace_bench").joinpath("data/tools_tasks.jsonl").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        spec = json.loads(line)
        lower = spec["task"].lower()
        missing = [e for e in spec["entities"] if e.lower() not in lower]
        if missing or ATTRIBUTES[spec["attribute"]] not in lower or spec["kind"] not in KINDS:
            raise InputError(f"bundled task {spec['id']}: its text does not name {missing or spec['attribute']}")
        if spec["kind"] in kinds:
            out.append(ToolTask(spec["id"], spec["kind"], spec["task"], expected_of(spec), list(spec["entities"]),
                                spec))
    return out


def load_user_tasks(path: Path, kinds: list[str] | None = None) -> list[ToolTask]:
    """Tasks from a JSONL file (``task``, ``answer``; optional ``id``, ``kind``) against the bundled tools.

    A number (or text that is one) is scored as a number, other text as a name the answer must contain.
    Any problem is one ``InputError`` naming the line.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--tasks {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    out: list[ToolTask] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"--tasks {path}, line {n}: not JSON ({exc.msg})") from None
        except ValueError as exc:  # not a decode error: an integer of more digits than int() converts
            raise InputError(f"--tasks {path}, line {n}: not JSON ({exc})") from None
        if not isinstance(row, dict) or not isinstance(row.get("task"), str) or not row["task"].strip():
            raise InputError(f"--tasks {path}, line {n}: needs a non-empty \"task\" string")
        answer = row.get("answer")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
            raise InputError(f"--tasks {path}, line {n}: needs an \"answer\" (a number or a name)")
        number = _as_number(answer)
        expected = Expected(None, number) if number is not None else Expected(str(answer).strip(), None)
        kind = str(row.get("kind") or "custom")
        if kinds and kind not in kinds:
            continue
        out.append(ToolTask(str(row.get("id") or f"t{n}"), kind, row["task"].strip(), expected))
    if not out:
        raise InputError(f"--tasks {path}: no tasks" + (f" of kinds {', '.join(kinds)}" if kinds else ""))
    return out


def _as_number(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    found = numbers(str(value))
    return found[0] if len(found) == 1 and _NUM.fullmatch(str(value).strip()) else None


_NUM = re.compile(r"-?\d(?:[\d,]*\d)?(?:\.\d+)?(?:\s*(thousand|million|billion))?", re.IGNORECASE)
_SCALE = {"thousand": 1e3, "million": 1e6, "billion": 1e9}


def numbers(text: str) -> list[float]:
    """Every number in ``text``: thousands separators dropped, "1.2 million" read as 1200000."""
    out = []
    for m in _NUM.finditer(text):
        digits = m.group(0)[: m.start(1) - m.start(0)] if m.group(1) else m.group(0)
        try:
            value = float(digits.replace(",", "").strip())
        except ValueError:
            continue
        out.append(value * _SCALE[m.group(1).lower()] if m.group(1) else value)
    return out


def score(answer: str, expected: Expected, candidates: list[str] | None = None) -> bool:
    """Right when the answer names the expected entity and contains the expected number (within ``REL_TOL``).

    With the task's candidates, the entity must be the first of them the answer mentions (an answer that
    lists them all is not a choice). Differences count by size: "-340" is right for 340.
    """
    lower = answer.lower()
    if expected.entity is not None:
        places = {c: lower.find(c.lower()) for c in (candidates or [expected.entity])}
        named = [c for c, at in sorted(places.items(), key=lambda kv: kv[1]) if at >= 0]
        if not named or _key(named[0]) != _key(expected.entity):
            return False
    if expected.number is not None:
        target = abs(expected.number)
        if not any(math.isclose(abs(x), target, rel_tol=REL_TOL, abs_tol=0.5) for x in numbers(answer)):
            return False
    return expected.entity is not None or expected.number is not None
