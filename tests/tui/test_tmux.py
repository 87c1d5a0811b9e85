"""`vivace tui` driven in tmux against the real engine, as a person would: type, watch, cancel, quit."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from tests.helpers import VIVACE, cli_env

pytestmark = [pytest.mark.engine, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (make test installs it)")]

POINT = re.compile(r"[✓…✗] (\d+)\. \S")


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30, check=True).stdout


def wait_for(session: str, check: Callable[[str], bool], timeout: float, what: str, poll_s: float = 0.5) -> str:
    deadline = time.time() + timeout
    screen = ""
    while time.time() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if check(screen):
            return screen
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")


def streaming(screen: str) -> bool:
    """Whether the run shows generated text: a point panel's body (a branch has streamed), or the answer panel."""
    lines = screen.splitlines()
    if any(line.startswith("╭─ answer") for line in lines):
        return True
    start = next((i for i, line in enumerate(lines) if POINT.search(line)), None)
    if start is None:
        return False
    for line in lines[start + 1:]:
        if line.startswith("╭") and not POINT.search(line):
            break  # the footer's panel: the point panels end above it
        if line.startswith("│") and re.search(r"\w", line.replace("│", "")):
            return True
    return False


def test_tui_in_tmux(tmp_path: Path, vivace_home: Path, model_dir: Path) -> None:
    session = f"vivace-{uuid.uuid4().hex[:8]}"
    env = cli_env(vivace_home)
    home = tmp_path / "home"
    env["VIVACE_HOME"] = str(home)
    (home / "models").mkdir(parents=True)
    (home / "models" / model_dir.name).symlink_to(model_dir)  # the prepared model, not a second conversion
    script = tmp_path / "run.sh"
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items() if k.isidentifier())
    # COLUMNS/LINES, when the environment has them, pin the size Textual reads: the resize below must be seen.
    # --max-tokens 512 (the default budget): each point's share of it is 40-96 tokens, so the branches of the
    # second run are still streaming when the Ctrl-C sent on their first text lands.
    script.write_text(f"{exports}unset COLUMNS LINES\n{shlex.quote(VIVACE)} tui --mode sot --max-tokens 512\necho EXITED $?\nsleep 120\n")
    tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", f"bash {shlex.quote(str(script))}")
    try:
        wait_for(session, lambda s: "ready ·" in s, 600, "the engine")
        tmux("send-keys", "-t", session, "What are the main benefits of regular exercise?", "Enter")
        seen_points: set[str] = set()

        def finished(screen: str) -> bool:
            seen_points.update(POINT.findall(screen))
            return "done: latency" in screen or "failed" in screen

        screen = wait_for(session, finished, 600, "the run to finish")
        assert "route: sot" in screen
        assert len(seen_points) >= 2, screen  # a panel per point
        footer = screen[screen.index("elapsed"):]
        assert re.search(r"elapsed \d+\.\d s · TTFT \d+\.\d\d s · \d+\.\d tok/s", footer), footer
        assert re.search(r"done: latency \d+\.\d\d s · estimated speedup \d+\.\d\d× vs normal", footer), footer

        # The same finished run at 100x30: the view redraws to the new size, panels and footer still there.
        tmux("resize-window", "-t", session, "-x", "100", "-y", "30")
        screen = wait_for(session, lambda s: max(map(len, s.splitlines())) > 80 and "done: latency" in s, 60, "the redraw at 100x30")
        assert len(POINT.findall(screen)) >= 2 and "elapsed" in screen, screen

        # A second run, cancelled with Ctrl-C as soon as a branch streams: the UI stays.
        tmux("send-keys", "-t", session, "List some tips for learning a new language.", "Enter")
        wait_for(session, lambda s: "Q: List some tips" in s, 120, "the second run to start")
        second_ended = re.compile(r"^│ (done: latency|failed|cancelled)", re.M)  # the footer's last line
        wait_for(session, lambda s: streaming(s) or bool(second_ended.search(s)), 300, "the second run to stream",
                 poll_s=0.1)
        tmux("send-keys", "-t", session, "C-c")
        screen = wait_for(session, lambda s: bool(second_ended.search(s)), 120, "the cancellation (or the end)")
        second = second_ended.search(screen).group(1).split(":")[0]
        assert "EXITED" not in screen and "2 run(s)" in screen, screen
        if second != "cancelled":
            # The model was faster than the key: the run ended before Ctrl-C landed; check the finished path instead.
            assert second == "done", screen
            footer = screen[screen.index("elapsed"):]
            assert re.search(r"elapsed \d+\.\d s · TTFT \d+\.\d\d s · \d+\.\d tok/s", footer), footer
            speedup = r" · estimated speedup \d+\.\d\d× vs normal" if POINT.search(screen) else ""  # none after a fallback
            assert re.search(rf"done: latency \d+\.\d\d s{speedup}", footer), footer

        # A pipeline, chosen with F3: one row per agent, from waiting through running to done.
        agent_line = re.compile(r"^(\S+) · mode", re.M)  # the status line names the chosen agent
        for _ in range(12):
            before = agent_line.search(tmux("capture-pane", "-p", "-t", session))
            if before and before.group(1) == "research":
                break
            tmux("send-keys", "-t", session, "F3")
            wait_for(session, lambda s: (m := agent_line.search(s)) is not None and m.group(0) != (before and before.group(0)),
                     60, "F3 to choose the next agent", poll_s=0.1)
        tmux("send-keys", "-t", session, "Compare electric cars and petrol cars.", "Enter")
        wait_for(session, lambda s: "pipeline: 4 step(s)" in s, 120, "the pipeline to start")
        ended = re.compile(r"^│ (done: latency|failed)", re.M)  # the footer's last line, not a row's status
        screen = wait_for(session, lambda s: bool(ended.search(s)), 900, "the pipeline to finish")
        for step, agent in (("plan", "planner"), ("write", "writer"), ("review", "critic")):
            assert re.search(rf"^{step}\s.*{agent}\s.*(done|failed)\s.*\d+\.\d", screen, re.M), screen
        assert re.search(r"^research #1\s.*researcher", screen, re.M), screen

        tmux("send-keys", "-t", session, "Escape")
        time.sleep(0.5)
        tmux("send-keys", "-t", session, "q")
        wait_for(session, lambda s: "EXITED 0" in s, 120, "the app to quit")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    records = [json.loads(line) for line in (home / "tui" / "transcript.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records][:2] == ["done", second] and len(records) == 3
    assert records[2]["agent"] == "research" and records[2]["calls"]
    assert records[0]["mode"] == "sot" and records[0]["answer"] and records[0]["calls"]
    assert records[0]["speedup_estimated"] is True and records[0]["speedup_how"].startswith("estimate: ")
