"""``vivace run`` and ``vivace agents list`` as a user runs them (subprocesses, FakeBackend).

FakeBackend here tests the command's plumbing (errors, JSON record, traces);
the real-engine run of ``research`` is in tests/agents/test_pipeline_engine.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import VIVACE, cli_env
import subprocess


def vivace(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VIVACE, *args], capture_output=True, text=True, env=cli_env(home), timeout=300)


def test_run_json_record(tmp_path: Path) -> None:
    trace_file = tmp_path / "t.jsonl"
    out = vivace(tmp_path, "run", "research", "Explain tea.", "--backend", "fake", "--json",
                 "--trace-out", str(trace_file), "--max-branches", "2")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("agent", "answer", "status", "error", "mode", "latency_s", "critical_path_s", "parallelism", "calls",
                "agents", "prompt_tokens", "output_tokens"):
        assert key in record
    assert record["agent"] == "research" and record["answer"] and record["status"] == "done"
    # every call carries its context decision, under one key
    assert all(c["extra"]["context"]["compression"] == "skipped" for c in record["calls"])
    assert {"name", "latency_s", "calls", "prompt_tokens", "output_tokens"} <= set(record["agents"][0])
    assert {c["agent"] for c in record["calls"]} == {"planner", "researcher", "writer", "critic"}
    saved = json.loads(trace_file.read_text().splitlines()[-1])
    assert saved == record  # one record: --json, --trace-out and runs.jsonl hold the same object
    assert (tmp_path / "runs" / "runs.jsonl").is_file()


def test_run_prints_result_and_table(tmp_path: Path) -> None:
    out = vivace(tmp_path, "run", "research", "Explain tea.", "--backend", "fake")
    assert out.returncode == 0, out.stderr
    assert "researcher" in out.stdout and "parallelism" in out.stdout and "critical path" in out.stdout
    assert "▶ plan (planner)" in out.stderr and "✓ review" in out.stderr
    assert re.search(r"critical path: plan [\d.]+ s → research #\d [\d.]+ s → write [\d.]+ s → review [\d.]+ s",
                     out.stdout), out.stdout


def test_mode_reaches_the_sot_agent(tmp_path: Path) -> None:
    """`--mode` goes to the agent's options; `--mod` is refused, not taken as `--model`."""
    nodes = {}
    for mode in ("sot", "normal"):
        out = vivace(tmp_path, "run", "sot", "Why exercise?", "--mode", mode, "--backend", "fake", "--json")
        assert out.returncode == 0, out.stderr
        nodes[mode] = [c["node"] for c in json.loads(out.stdout.strip().splitlines()[-1])["calls"]]
    assert "skeleton" in nodes["sot"] and nodes["normal"] == ["normal"]  # the same call names as `ask`
    out = vivace(tmp_path, "run", "sot", "x", "--mod", "sot", "--backend", "fake")
    assert out.returncode == 2 and "unrecognized arguments: --mod" in out.stderr


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["run", "nope", "hi"], 2, "error: unknown agent 'nope'; available: answer, chat, critic, documents, extractor, planner, research"),
        (["run", "answer", "   "], 2, "error: the question is empty"),
        (["run", "/nonexistent/p.toml", "hi"], 2, "error: pipeline file not found"),
        (["run", "research", "hi", "--max-branches", "0"], 2, "--max-branches: Input should be greater than or equal to 1"),
    ],
)
def test_bad_input(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    out = vivace(tmp_path, *args, "--backend", "fake")
    assert out.returncode == code, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_unbounded_pipeline_file_is_refused(tmp_path: Path) -> None:
    pipe = tmp_path / "loop.toml"
    pipe.write_text('edges = [["a", "b"], ["b", "a"]]\n[steps]\na = "answer"\nb = "critic"\n')
    out = vivace(tmp_path, "run", str(pipe), "hi", "--backend", "fake")
    assert out.returncode == 2 and "loop without a bound: a -> b -> a" in out.stderr


def test_agents_list(tmp_path: Path) -> None:
    out = vivace(tmp_path, "agents", "list", "--json")
    assert out.returncode == 0, out.stderr
    names = {a["name"] for a in json.loads(out.stdout.strip().splitlines()[-1])["agents"]}
    assert {"answer", "sot", "research", "planner", "researcher", "writer", "critic"} <= names


def test_ask_run_and_tui_write_one_record_shape(tmp_path: Path) -> None:
    asked = vivace(tmp_path, "ask", "Why is tea popular?", "--backend", "fake", "--json", "--mode", "sot")
    ran = vivace(tmp_path, "run", "sot", "Why is tea popular?", "--backend", "fake", "--json")
    for out in (asked, ran):
        assert out.returncode == 0, out.stderr
    a, r = (json.loads(o.stdout.strip().splitlines()[-1]) for o in (asked, ran))
    assert set(a) == set(r) and a["agent"] == r["agent"] == "sot"
    piped = subprocess.run([VIVACE, "tui", "--backend", "fake", "--mode", "normal"], input="What is tea?\n",
                           capture_output=True, text=True, env=cli_env(tmp_path), timeout=300)
    assert piped.returncode == 0, piped.stderr
    saved = [json.loads(line) for line in (tmp_path / "runs" / "runs.jsonl").read_text().splitlines()]
    assert len(saved) == 3 and all(set(s) == set(a) for s in saved)
