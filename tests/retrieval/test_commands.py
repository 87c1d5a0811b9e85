"""The ingest and collections commands through the real CLI entry point (no engine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vivace.cli import main

from .conftest import write


def test_ingest_list_drop(tmp_path: Path, capsys: pytest.CaptureFixture[str], cname: str) -> None:
    home = ["--home", str(tmp_path / "home")]
    docs = write(tmp_path / "d", {"a.md": "Plover Point has a tide clock. " * 10, "z.bin": b"\x00\x01"})
    assert main(["ingest", str(docs), "--collection", cname, "--tag", "team=blue", "--json", *home]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["files"] == 1 and report["added"] >= 1
    assert main(["collections", "list", "--json", *home]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["name"] for r in rows] == [cname] and rows[0]["embedder"] == "all-MiniLM-L6-v2"
    assert main(["collections", "drop", cname, *home]) == 0
    capsys.readouterr()
    assert main(["collections", "drop", cname, *home]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["ingest", str(tmp_path / "nope"), "-c", cname, *home]) == 2


# The CLI, then the heavy libraries it imported (on stdout: a refused command prints nothing there of its own).
HEAVY_IMPORTS_CLI = """
import sys
from vivace.cli import main
try:
    code = main(sys.argv[1:])
finally:
    heavy = {"chromadb", "sentence_transformers", "torch", "transformers", "vllm"}
    print(sorted({m.split(".")[0] for m in sys.modules} & heavy), flush=True)
sys.exit(code)
"""


def test_bad_input_is_one_line_exit_2_before_any_model_loads(tmp_path: Path) -> None:
    """A subprocess, as a user runs it: a typo is refused before the embedder (~10 s to load) or Chroma is imported."""
    import subprocess
    import sys

    from tests.helpers import cli_env

    cases = [
        (["ingest", str(tmp_path / "MISSING"), "--collection", "xyz"], f"error: no such file or folder: {tmp_path / 'MISSING'}"),
        (["ingest", "README.md", "--collection", "bad name!"], "error: invalid collection name 'bad name!': a collection name has "
         "3-512 characters from [a-zA-Z0-9._-], starting and ending with a letter or digit, no '..', not an IP address"),
    ]
    for args, line in cases:
        out = subprocess.run([sys.executable, "-c", HEAVY_IMPORTS_CLI, *args], capture_output=True, text=True,
                             env=cli_env(tmp_path), timeout=120, cwd=Path(__file__).resolve().parents[2])
        assert out.returncode == 2 and out.stderr.strip().splitlines() == [line], out.stderr
        assert out.stdout.strip() == "[]", out.stdout  # no embedder, no Chroma, no torch
    assert not (tmp_path / "chroma").exists()  # nothing was created


def test_sync_flag_prunes_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str], cname: str) -> None:
    home = ["--home", str(tmp_path / "home")]
    docs = write(tmp_path / "d", {"a.md": "Alder Cove has a green buoy.", "b.md": "Birch Cove has a white buoy."})
    assert main(["ingest", str(docs), "-c", cname, *home]) == 0
    (docs / "b.md").unlink()
    capsys.readouterr()
    assert main(["ingest", str(docs), "-c", cname, "--json", *home]) == 0  # without --sync: b.md's chunk stays
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pruned"] == 0
    assert main(["ingest", str(docs), "-c", cname, "--sync", *home]) == 0
    out = capsys.readouterr().out
    assert "1 pruned (1 files gone)" in out
    assert main(["collections", "list", "--json", *home]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])[0]["chunks"] == 1
