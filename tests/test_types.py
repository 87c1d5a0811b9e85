"""vivace type-checks under ``mypy --strict`` with no errors.

Why a test: the package ships ``py.typed``, so its annotations are part of its
API, and a wrong one (an Optional never checked, an attribute read off the
wrong exception type) is often a bug mypy sees before a user does. The
configuration (strict, which files, the few third-party modules with no
stubs) is ``[tool.mypy]`` in pyproject.toml, so this runs exactly what
``.venv/bin/mypy`` runs by hand. Its cache is the default ``.mypy_cache`` at
the repository root: the first run checks everything (about a minute), later
ones only what changed (seconds).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_strict_finds_no_errors() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         check=False)
    assert out.returncode == 0, f"mypy --strict (pyproject.toml [tool.mypy]) failed:\n{out.stdout}{out.stderr}"


def test_a_step_record_has_the_keys_its_type_names() -> None:
    """``StepRun.to_dict`` reads the instance; ``StepRecord`` must name the same keys, or readers are typed wrong."""
    import dataclasses

    from vivace.agents.base import StepRun
    from vivace.trace import StepRecord

    fields = {f.name for f in dataclasses.fields(StepRun)} - {"query", "history"}
    assert set(StepRecord.__annotations__) == fields | {"seconds"}
    record = StepRun(id=1, scope=0, step="s", agent="a", branch=None, round=0, started_at=0.0).to_dict()
    assert set(record) == set(StepRecord.__annotations__)
