"""Durable runs from the CLI: `vivace runs list`, `vivace resume`, their faults, and a SIGKILL on the real engine.

The fault cases run the console script on the fake backend (no engine): bad
input is exit 2, an environment fault exit 1, one line each, nothing
overwritten. The kill test runs ``vivace bench faults``' trial against the
module's real vLLM server: a `vivace run research` process SIGKILLed mid-run,
then `vivace resume`, and the records say which steps ran again.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import FAKE, cli, one_line


def test_runs_list_and_resume_from_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = cli("run", "writer", "Say hello.", "--json", *FAKE, home=home, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout)["run_id"]
    listed = cli("runs", "list", "--json", home=home, cwd=tmp_path)
    rows = json.loads(listed.stdout)["runs"]
    assert rows[0]["run_id"] == run_id and rows[0]["status"] == "done" and rows[0]["agent"] == "writer"
    table = cli("runs", "list", home=home, cwd=tmp_path)
    assert run_id in table.stdout and "done" in table.stdout
    one_line(cli("resume", run_id, *FAKE, home=home, cwd=tmp_path), 2, run_id, "finished (done)")
    one_line(cli("resume", "0123456789ab", *FAKE, home=home, cwd=tmp_path), 2, "no run '0123456789ab'")
    one_line(cli("runs", "list", "--limit", "0", home=home, cwd=tmp_path), 2, "--limit")
    one_line(cli("run", "writer", "Say hello.", "--thread", "", *FAKE, home=home, cwd=tmp_path), 2, "thread id")


def test_a_paused_run_is_finished_by_resume_with_approve(tmp_path: Path) -> None:
    home = tmp_path / "home"
    toml = tmp_path / "gated.toml"
    toml.write_text('name = "gated"\nedges = [["draft", "publish"]]\n[steps]\ndraft = "answer"\n'
                    'publish = { agent = "writer", requires_approval = true }\n')
    paused = cli("run", str(toml), "Write a note.", "--json", *FAKE, home=home, cwd=tmp_path)  # no terminal: pauses
    record = json.loads(paused.stdout)
    assert paused.returncode == 0 and record["status"] == "paused"
    assert record["meta"]["pending_approval"]["what"] == "run step 'publish' (agent writer)"
    done = cli("resume", record["run_id"], "--approve", "all", "--json", *FAKE, home=home, cwd=tmp_path)
    finished = json.loads(done.stdout)
    assert done.returncode == 0 and finished["status"] == "done"
    assert finished["meta"]["resumed_steps"] == ["draft.0"] and finished["meta"]["resumed_from"] == record["run_id"]
    assert [c["node"] for c in finished["calls"]] == ["publish"]  # the draft was not written again
    one_line(cli("resume", record["run_id"], *FAKE, home=home, cwd=tmp_path), 2, "already resumed as")
    again = cli("run", str(toml), "Write a note.", "--json", *FAKE, home=home, cwd=tmp_path)
    toml.write_text(toml.read_text().replace('"writer"', '"extractor"'))  # the file changed before the resume
    one_line(cli("resume", json.loads(again.stdout)["run_id"], *FAKE, home=home, cwd=tmp_path), 2, "changed since run")


def test_a_corrupt_or_locked_checkpoint_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "checkpoints.db").write_bytes(b"this is not a database" * 100)
    one_line(cli("runs", "list", home=home, cwd=tmp_path), 1, "checkpoint database", "not a database")
    one_line(cli("run", "writer", "Say hello.", *FAKE, home=home, cwd=tmp_path), 1, "checkpoint database")
    assert (home / "checkpoints.db").read_bytes().startswith(b"this is not a database")  # nothing overwritten
    other = tmp_path / "other"
    assert cli("run", "writer", "Say hello.", *FAKE, home=other, cwd=tmp_path).returncode == 0
    holder = sqlite3.connect(other / "checkpoints.db")
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, and never letting go
    try:
        one_line(cli("run", "writer", "Say hello.", *FAKE, home=other, cwd=tmp_path), 1, "locked")
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.engine
def test_a_pipeline_killed_with_sigkill_resumes_without_running_finished_steps(api_server: str, tmp_path: Path) -> None:
    from vivace_bench.fault_bench import run_trials

    report = asyncio.run(run_trials(api_server, 2, max_tokens=48, seed=3, home=tmp_path / "home"))
    rows = [r for r in report["rows"] if r["resumed"]]
    assert rows, report["rows"]
    for row in rows:
        assert row["status_after_kill"] == "killed"  # the lock died with the process
        assert row["resume_exit"] == 0 and row["status"] == "done", row
        assert row["rerun_steps"] == 0 and row["rerun_calls"] == 0, row
        assert row["resumed_steps"] >= row["finished_before_kill"], row
        assert row["complete"], row


@pytest.mark.engine
def test_a_thread_reaches_the_model_on_the_real_server(api_server: str, tmp_path: Path) -> None:
    """The second turn's prompt carries the first turn: more prompt tokens than the same question alone."""
    home = tmp_path / "home"
    flags = ("--backend", "openai", "--base-url", api_server, "--max-tokens", "24", "--mode", "normal", "--json")

    def ask(question: str, *extra: str) -> dict[str, object]:
        out = cli("ask", question, *flags, *extra, home=home, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = ask("My name is Ada and I keep bees.", "--thread", "bees")
    second = ask("What do I keep?", "--thread", "bees")
    alone = ask("What do I keep?")
    assert first["thread"] == {"id": "bees", "turns": 0, "dropped": 0}
    assert second["thread"] == {"id": "bees", "turns": 1, "dropped": 0}
    assert second["prompt_tokens"] > alone["prompt_tokens"] + 8  # the earlier turn went into the prompt
    listed = json.loads(cli("runs", "list", "--json", home=home, cwd=tmp_path).stdout)["runs"]
    assert [r["run_id"] for r in listed[:3]] == [alone["run_id"], second["run_id"], first["run_id"]]
