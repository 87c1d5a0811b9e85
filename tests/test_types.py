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
