"""Entry-point plug-ins (agents, tools, CLI commands): loaded once by their owner, a broken one logged and skipped.

Why one loader: a plug-in is third-party import code, so anything may go
wrong in it (an ImportError, a SystemExit, a bad object); each owner turns
what loaded into its own kind (an agent, a tool, a command) inside the same
guard, and records what it skipped so ``vivace agents``/``vivace tools`` can
show why. Ctrl-C is the user's, never the plug-in's, and passes through.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any, Callable, Iterable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def source_of(ep: Any) -> str:
    """``plug-in <distribution> <version>``, or the entry point's value when it has no distribution."""
    dist = getattr(ep, "dist", None)
    return f"plug-in {dist.name} {dist.version}" if dist is not None else f"plug-in {ep.value}"


def load_group(group: str, kind: str, make: Callable[[Any, str], T], broken: list[tuple[str, str]],
               entry_points: Iterable[Any] | None = None) -> list[tuple[Any, T]]:
    """``make(entry_point, source)`` for each entry point of ``group``; a failure is logged, kept in ``broken``
    as ``(name, why)`` and skipped. ``entry_points`` replaces the installed ones (tests)."""
    eps = metadata.entry_points(group=group) if entry_points is None else entry_points
    made: list[tuple[Any, T]] = []
    for ep in eps:
        try:
            made.append((ep, make(ep, source_of(ep))))
        except KeyboardInterrupt:
            raise  # the user's Ctrl-C, not the plug-in's fault
        except BaseException as exc:  # noqa: BLE001 - SystemExit & co. from third-party import code: a broken plug-in
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            broken.append((ep.name, why))
            log.warning("skipped %s plug-in %r (%s): %s", kind, ep.name, ep.value, why)
    return made
