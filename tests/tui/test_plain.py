"""Not a terminal: `vivace tui` and `--live` degrade to plain streaming text (orchestration only: fake backend)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.test_cli import VIVACE, cli_env


def run(args: list[str], home: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([VIVACE, *args], input=stdin, capture_output=True, text=True, env=cli_env(home), timeout=120)


def test_tui_reads_questions_from_a_pipe_and_streams_plain_text(tmp_path: Path) -> None:
    proc = run(["tui", "--backend", "fake", "--mode", "normal"], tmp_path, stdin="What is 2+2?\n\nName a colour.\n")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stdout  # no escape codes into a pipe
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 2 and "What is 2+2?" in lines[0] and "Name a colour." in lines[1]
    assert proc.stderr.count("normal · TTFT") == 2  # one summary per question


def test_live_flag_into_a_pipe_is_the_plain_output(tmp_path: Path) -> None:
    live = run(["ask", "Why exercise?", "--backend", "fake", "--mode", "normal", "--live"], tmp_path)
    plain = run(["ask", "Why exercise?", "--backend", "fake", "--mode", "normal"], tmp_path)
    assert live.returncode == plain.returncode == 0
    assert "\x1b[" not in live.stdout
    # The same answer text; only the timings in the summary line differ.
    assert live.stdout.split("normal · TTFT")[0] == plain.stdout.split("normal · TTFT")[0]
    assert "normal · TTFT" in live.stdout
