"""Retrieval fixtures: a private Chroma folder per test module and unique collection names."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from vivace.config import Config


@pytest.fixture(scope="module")
def rconfig(tmp_path_factory: pytest.TempPathFactory) -> Config:
    home = tmp_path_factory.mktemp("vhome")
    return Config(home=home, chroma_path=home / "chroma")


@pytest.fixture
def cname() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        path = folder / name
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return folder


def ingest_corpus(config: Config, factory: pytest.TempPathFactory, prefix: str, docs: int, seed: int) -> tuple[str, list[dict[str, str]]]:
    """A synthetic corpus (planted facts the model cannot know) in a fresh collection: its name and questions."""
    from vivace_bench.synthetic import make_corpus
    from vivace.retrieval.store import Store

    files, questions = make_corpus(docs=docs, seed=seed)
    name = f"{prefix}-" + factory.mktemp("x").name[-8:].replace("_", "x")
    Store(config).ingest([write(factory.mktemp(prefix), files)], name)
    return name, questions
