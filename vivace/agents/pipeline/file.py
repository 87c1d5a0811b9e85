"""Reading a pipeline definition (a TOML file or a dict) into steps, edges and loops.

Why its own module: a pipeline file is user input, and every way it can be
wrong (not a file, not UTF-8, not TOML, a list where a table belongs, a bound
that is not a whole number) must be one ``InputError`` naming the file and the
key, never a ``TypeError`` from deep inside. The graph checks (unknown agents,
cycles, missing inputs) stay in ``Pipeline.validate``; this only checks shapes
and types.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from vivace.agents.sampling import check_model, check_sampling
from vivace.errors import InputError, unknown_key

KEYS = ("name", "description", "output", "edges", "steps", "loops")
STEP_KEYS = ("agent", "fan_out", "per_item", "max_branches", "params", "model", "sampling", "tools",
             "requires_approval")
LOOP_KEYS = ("from", "to", "when", "max_rounds")


def read_toml(path: str | Path) -> dict[str, Any]:
    """The file's TOML table; a missing, unreadable, non-UTF-8 or invalid file is one line."""
    file = Path(path)
    try:
        return tomllib.loads(file.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise InputError(f"pipeline file not found: {file}") from None
    except IsADirectoryError:
        raise InputError(f"pipeline file {file} is a directory; give a .toml file") from None
    except OSError as exc:
        raise InputError(f"pipeline file {file}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{file}: invalid TOML ({exc})") from None


class Reader:
    """Typed getters that blame ``origin`` and the key path for a value of the wrong shape."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, where: str, expected: str, value: Any) -> InputError:
        return InputError(f"{self.origin}: {where} must be {expected}, got {value!r}")

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, "a non-empty string", value)
        return value

    def whole(self, value: Any, where: str, minimum: int) -> int:
        """A whole number >= ``minimum``: bools, inf/nan, fractions and strings are refused."""
        ok = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value, ok = int(value), True
        if not ok:
            raise self.fail(where, "a whole number", value)
        if value < minimum:
            raise self.fail(where, f"at least {minimum}", value)
        return int(value)

    def flag(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "true or false", value)
        return value

    def table(self, value: Any, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "a table", value)
        if extra := sorted(set(value) - set(keys)):
            raise InputError(f"{self.origin}: {where}: {unknown_key(extra[0], keys)}")
        return value

    def array(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, "an array", value)
        return value


def parse(data: Any, origin: str, default_branches: int) -> dict[str, Any]:
    """Check ``data``'s shape; returns plain fields: ``steps`` as dicts of ``Step`` fields,
    ``edges`` as pairs, ``loops`` as (from, to, when, max_rounds) tuples, ``name``, ``output``, ``description``."""
    r = Reader(origin)
    if not isinstance(data, dict):
        raise r.fail("a pipeline", "a table", data)
    if unknown := sorted(set(data) - set(KEYS)):
        raise InputError(f"{origin}: {unknown_key(unknown[0], sorted(KEYS))}")
    steps = []
    specs = data.get("steps", {})
    if not isinstance(specs, dict):
        raise r.fail("steps", 'a table ([steps] then name = "agent" lines)', specs)
    for name, spec in specs.items():
        if isinstance(spec, str):
            spec = {"agent": spec}
        if not isinstance(spec, dict) or "agent" not in spec:
            raise InputError(f"{origin}: step {name!r} needs an agent (step = \"agent\" or {{ agent = ... }})")
        r.table(spec, f"step {name!r}", STEP_KEYS)
        params = spec.get("params", {})
        if not isinstance(params, dict):
            raise r.fail(f"step {name!r}: params", "a table (params = { key = value })", params)
        steps.append({
            "name": name,
            "agent": r.text(spec["agent"], f"step {name!r}: agent"),
            "fan_out": r.flag(spec.get("fan_out", False), f"step {name!r}: fan_out"),
            "per_item": r.flag(spec.get("per_item", False), f"step {name!r}: per_item"),
            "max_branches": r.whole(spec.get("max_branches", default_branches), f"step {name!r}: max_branches", 1),
            "params": dict(params),
            "model": check_model(spec.get("model"), f"{origin}: step {name!r}"),
            "sampling": check_sampling(spec.get("sampling", {}), f"{origin}: step {name!r}"),
            "tools": tuple(r.text(t, f"step {name!r}: tools") for t in r.array(spec.get("tools", []),
                                                                                 f"step {name!r}: tools")),
            "requires_approval": r.flag(spec.get("requires_approval", False), f"step {name!r}: requires_approval"),
        })
    edges = []
    for edge in r.array(data.get("edges", []), "edges"):
        if not (isinstance(edge, list) and len(edge) == 2 and all(isinstance(e, str) for e in edge)):
            raise InputError(f"{origin}: an edge is [\"from\", \"to\"], got {edge!r}")
        edges.append((edge[0], edge[1]))
    loops = []
    for spec in r.array(data.get("loops", []), "loops"):
        spec = r.table(spec, "a loop ([[loops]])", LOOP_KEYS)
        if "from" not in spec or "to" not in spec:
            raise InputError(f"{origin}: a loop needs from and to, got {spec!r}")
        bound = spec.get("max_rounds")
        loops.append((r.text(spec["from"], "loop from"), r.text(spec["to"], "loop to"),
                      r.text(spec.get("when", "revise"), "loop when"),
                      None if bound is None else r.whole(bound, "loop max_rounds", 0)))
    for key in ("name", "description"):
        if not isinstance(data.get(key, ""), str):
            raise r.fail(key, "a string", data[key])
    return {
        "name": data.get("name") or None,
        "output": None if data.get("output") is None else r.text(data["output"], "output"),
        "description": data.get("description", ""),
        "steps": steps, "edges": edges, "loops": loops,
    }
