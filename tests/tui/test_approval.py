"""The TUI asks for an approval in a prompt of its own, and a thread carries the session's turns.

Textual's test pilot drives the real app on the fake backend (the run's
orchestration is what is tested; the engine TUI test is ``test_tmux.py``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.agents.fakes import gated, research_responder as responder
from vivace.agents.registry import REGISTRY
from vivace.assembly import runtime_for
from vivace.config import Config
from vivace.runtime.fake import FakeBackend
from vivace.tui.app import ApprovalScreen, VivaceTUI


async def _until(pilot: Any, check: Any, what: str) -> None:
    for _ in range(400):
        if check():
            return
        await pilot.pause(0.025)
    raise AssertionError(f"the TUI never showed {what}")


def test_a_step_that_needs_approval_shows_a_prompt_and_goes_on_after_y(tmp_path: Path) -> None:
    backend = FakeBackend(responder())
    runtime = runtime_for(Config(backend="fake", home=tmp_path, max_tokens=64), backend)
    REGISTRY.register(gated(), "test")

    async def go() -> tuple[str, Any, list[str]]:
        app = VivaceTUI(runtime, agent="gated", thread="tui-session")
        try:
            async with app.run_test(size=(100, 30)) as pilot:
                prompt = app.query_one("#prompt")
                await _until(pilot, lambda: not prompt.disabled, "the prompt")
                prompt.value = "How do bees fly?"
                await pilot.press("enter")
                await _until(pilot, lambda: isinstance(app.screen, ApprovalScreen), "the approval prompt")
                what = app.screen.what
                writes_before = [r.tag for r in backend.requests if "/write" in r.tag]
                await pilot.press("y")
                await _until(pilot, lambda: bool(app.history), "the finished run")
                turns = await runtime.checkpoints().turns("tui-session")
                return what, app.history[-1], writes_before + [str(len(turns))]
        finally:
            REGISTRY.unregister("gated")
            await runtime.aclose()

    what, item, seen = asyncio.run(go())
    assert what == "run step 'write' (agent writer)"
    assert seen[:-1] == []  # the writer had not run before the answer
    assert item.status == "done" and item.answer == "A draft answer."
    assert seen[-1] == "1"  # the session's thread holds the turn
