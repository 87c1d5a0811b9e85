"""`--live` on a real terminal (tmux): the run view redrawn in place, then the answer and the summary.

Orchestration only (fake backend): the real engine's view is covered by test_tmux.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import VIVACE, cli_env

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (make test installs it)")


def run_in_tmux(tmp_path: Path, args: str) -> str:
    session = f"vivace-live-{uuid.uuid4().hex[:8]}"
    env = cli_env(tmp_path / "home")
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items() if k.isidentifier())
    script = tmp_path / "run.sh"
    script.write_text(f"{exports}unset COLUMNS LINES\n{shlex.quote(VIVACE)} {args}\necho EXITED $?\nsleep 60\n")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", f"bash {shlex.quote(str(script))}"], check=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-S", "-200", "-t", session],
                                    capture_output=True, text=True, check=True).stdout
            if "EXITED" in screen:
                return screen
            time.sleep(0.5)
        raise AssertionError(f"the command did not finish; screen:\n{screen}")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_run_live_shows_one_row_per_step_then_the_summary(tmp_path: Path) -> None:
    screen = run_in_tmux(tmp_path, 'run research "Compare electric cars and petrol cars." --backend fake --live')
    assert "EXITED 0" in screen and "Traceback" not in screen
    assert "pipeline: 4 step(s) · plan, research, write, review" in screen
    rows = [line for line in screen.splitlines() if "│" in line and not line.startswith(("│", "╭", "╰", "┃"))]
    steps = [line.split("│")[0].strip() for line in rows]
    assert steps[:5] == ["plan", "research #1", "research #2", "write", "review"], screen  # the fake plans 2
    assert all("done" in line for line in rows[:5])
    assert "done: latency" in screen and "parallelism" in screen  # the footer, then the per-agent table
    assert "critical path" in screen


def test_ask_live_streams_into_the_view_and_prints_the_answer(tmp_path: Path) -> None:
    screen = run_in_tmux(tmp_path, 'ask "What is 2+2?" --backend fake --mode normal --live')
    assert "EXITED 0" in screen and "Traceback" not in screen
    assert "route: normal" in screen and "╭─ answer" in screen
    assert "done: latency" in screen and "normal · TTFT" in screen
