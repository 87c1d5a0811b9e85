"""Benchmarks: commands that write ``report.json``, never timed tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(out_dir: Path, report: dict[str, Any]) -> Path:
    """Write ``out_dir/report.json`` atomically, so an interrupted bench never leaves half a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(path)
    return path
