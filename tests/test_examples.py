"""The scripts under examples/ run as a user runs them (README "Use vivace from Python")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import cli_env

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str, *args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          env={**cli_env(home), **env}, timeout=600, cwd=home)


@pytest.mark.engine
def test_ask_example_on_the_embedded_engine(vivace_home: Path, model_dir: Path) -> None:
    out = example("ask.py", "Name three uses of copper.", home=vivace_home)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    summary = next(line for line in lines if " s · " in line and "call(s)" in line)
    assert summary.split(" · ")[0] in ("sot", "normal")
    assert int(summary.rsplit("·", 1)[1].split()[0]) >= 1
    assert "Traceback" not in out.stderr


def test_custom_pipeline_example(tmp_path: Path) -> None:
    out = example("custom_pipeline.py", "Explain tides.", home=tmp_path, VIVACE_BACKEND="fake")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "drafter" in out.stdout and "checker" in out.stdout and "status done" in out.stdout
    assert (tmp_path / "runs" / "runs.jsonl").is_file()  # a library run leaves its record too


def test_rag_research_example(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "pricing.md").write_text("The basic plan costs 12 euros a month. The team plan costs 40 euros a month.\n\n"
                                      "Discounts of 20 percent apply to yearly billing.\n")
    out = example("rag_research.py", str(notes), "What do the notes say about pricing?", home=tmp_path,
                  VIVACE_BACKEND="fake")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split() for line in out.stdout.splitlines() if "retrieved" in line]
    assert {r[0] for r in rows} == {"planner", "researcher", "writer", "critic"}
    assert all(int(r[r.index("retrieved") + 1]) >= 1 for r in rows)
