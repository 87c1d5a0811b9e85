"""Not a terminal: `vivace tui` and `--live` degrade to plain streaming text (orchestration only: fake backend)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import VIVACE, cli_env


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


def test_a_bad_line_does_not_stop_the_batch_and_every_run_is_recorded(tmp_path: Path) -> None:
    too_long = " ".join(["word"] * 9000)  # longer than the fake backend's 8192-token context: bad input
    stdin = b"What is tea?\n\xff bad\n" + too_long.encode() + b"\nSecond?\n"
    proc = subprocess.run([VIVACE, "tui", "--backend", "fake", "--mode", "normal"], input=stdin, capture_output=True,
                          env=cli_env(tmp_path), timeout=120)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 2, err  # the one failure was bad input
    assert "What is tea?" in out and "\ufffd bad" in out and "Second?" in out  # the lines after the bad ones too
    assert "warning: line 2: bytes that are not utf-8 replaced by U+FFFD" in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: line 3: agent 'sot' failed (step 'sot'): prompt is 9003 tokens, "
                      "longer than the model's context of 8192 tokens"]
    assert "1 of 4 questions failed" in err and "Traceback" not in err
    records = [json.loads(line) for line in (tmp_path / "runs" / "runs.jsonl").read_text().splitlines()]
    assert [(r["question"][:12], r["status"]) for r in records] == [
        ("What is tea?", "done"), ("\ufffd bad", "done"), ("word word wo", "failed"), ("Second?", "done")]


def test_exit_code_is_1_when_a_failure_is_not_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from vivace.commands.tui import _plain
    from vivace.config import Config
    from vivace.errors import RunError
    from vivace.tui import session

    real = session.run_task

    async def flaky(runtime: Any, question: str, **kwargs: Any) -> Any:
        if question == "server down":
            raise RunError("agent 'sot' failed: the server went away", exit_code=1)
        return await real(runtime, question, **kwargs)

    monkeypatch.setattr(session, "run_task", flaky)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"server down\nStill answered?\n")))
    args = argparse.Namespace(agent="answer", mode="normal", collection=None, thread=None)
    code = asyncio.run(_plain(args, Config(home=tmp_path, backend="fake")))
    captured = capsys.readouterr()
    assert code == 1 and "Still answered?" in captured.out
    assert "error: line 1: agent 'sot' failed: the server went away" in captured.err
