"""``--live`` for `vivace ask` and `vivace run`: the run view redrawn in place while it runs.

Only on a terminal: when stdout is not a TTY the commands keep their plain
streaming output, so pipes and logs get text, not escape codes.
"""

from __future__ import annotations

import sys
from typing import Awaitable, TypeVar

from rich.console import Console
from rich.live import Live

from vivace.tui.view import RunView

T = TypeVar("T")


def live_wanted(flag: bool) -> bool:
    return bool(flag) and sys.stdout.isatty()


async def run_live(work: Awaitable[T], view: RunView, console: Console | None = None) -> T:
    """Await ``work`` while ``view`` (fed by the run's events) is redrawn eight times a second."""
    console = console or Console()
    with Live(view, console=console, refresh_per_second=8, transient=False, vertical_overflow="crop"):
        try:
            result = await work
        except BaseException:
            view.finish(None, status="interrupted or failed")
            raise
        view.finish(result)
    return result


def print_final(view: RunView, console: Console | None = None) -> None:
    """After the live view: the whole answer, which the panels only showed the tail of."""
    console = console or Console()
    if view.final:
        console.print()
        console.print(view.final.strip(), highlight=False, markup=False)
