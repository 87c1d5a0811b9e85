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
