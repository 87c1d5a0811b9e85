"""Real ChromaDB and the real MiniLM: ingest, idempotence, retrieval, filters, bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from vivace.config import Config
from vivace.errors import InputError
from vivace.eval.synthetic import make_corpus
from vivace.retrieval.store import Store

from .conftest import write


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    files, questions = make_corpus(docs=6, seed=3)
    return write(tmp_path_factory.mktemp("corpus"), files), questions


def test_ingest_is_idempotent_and_updates(rconfig: Config, cname: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "docs", {"a.md": "Alpha is first. " * 30, "b.txt": "Beta follows alpha. " * 30})
    store = Store(rconfig)
    first = store.ingest([folder], cname, chunk_tokens=40, overlap=0)
    assert first.files == 2 and first.added == first.chunks > 2
    count = store.collection(cname).count()
    again = store.ingest([folder], cname, chunk_tokens=40, overlap=0)
    assert again.added == 0 and again.removed == 0 and store.collection(cname).count() == count
    (folder / "b.txt").write_text("Gamma replaced beta entirely.")
    changed = store.ingest([folder], cname, chunk_tokens=40, overlap=0)
    assert changed.added == 1 and changed.removed > 0
    texts = store.collection(cname).get()["documents"]
    assert not any("Beta" in t for t in texts) and any("Gamma" in t for t in texts)


def test_planted_fact_is_retrieved(rconfig: Config, cname: str, corpus: tuple[Path, list[dict[str, str]]]) -> None:
    folder, questions = corpus
    store = Store(rconfig)
    store.ingest([folder], cname)
    for q in questions:
        chunks = store.retrieve(q["question"], 2, cname)
        assert any(q["answer"] in c.text for c in chunks), q
        assert chunks[0].source.endswith(q["source"]) and -1 <= chunks[0].score <= 1


def test_metadata_filter(rconfig: Config, cname: str, tmp_path: Path) -> None:
    store = Store(rconfig)
    store.ingest([write(tmp_path / "a", {"x.md": "The orchard of Quell grows silver pears."})], cname, metadata={"kind": "a"})
    store.ingest([write(tmp_path / "b", {"y.md": "The orchard of Quell grows golden plums."})], cname, metadata={"kind": "b"})
    both = store.retrieve("What grows in the orchard of Quell?", 5, cname)
    only_b = store.retrieve("What grows in the orchard of Quell?", 5, cname, where={"kind": "b"})
    assert len(both) == 2
    assert [c.metadata["kind"] for c in only_b] == ["b"] and "plums" in only_b[0].text


def test_non_utf8_is_skipped_with_warning(rconfig: Config, cname: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write(tmp_path / "mixed", {"good.md": "Kestrel Bay has a red lighthouse.", "bad.txt": b"\xff\xfe\xfa latin-1 \xe9", "bin.md": b"PK\x00\x01\x02"})
    with caplog.at_level(logging.WARNING, logger="vivace.retrieval.store"):
        report = Store(rconfig).ingest([folder], cname)
    assert report.files == 1 and len(report.skipped) == 2
    assert sum("skipping" in r.message for r in caplog.records) == 2
    assert "lighthouse" in Store(rconfig).retrieve("lighthouse colour", 1, cname)[0].text


def test_bad_input_is_clear(rconfig: Config, cname: str, tmp_path: Path) -> None:
    store = Store(rconfig)
    with pytest.raises(InputError, match="nothing to ingest"):
        store.ingest([write(tmp_path / "empty", {"e.md": "  \n"})], cname)
    with pytest.raises(InputError, match="not found"):
        store.retrieve("anything", 3, "no-such-collection")
    with pytest.raises(InputError, match="no such file"):
        store.ingest([tmp_path / "missing"], cname)
    with pytest.raises(InputError, match="3 to 512"):
        store.collection("ab", create=True)


def test_interrupted_ingest_is_consistent_and_rerun_completes(rconfig: Config, cname: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "many", {f"f{i}.md": " ".join(f"Document {i} line {j} says the code word is w{i}x{j}." for j in range(12)) for i in range(12)})
    store = Store(rconfig)

    def interrupt(done: int, total: int) -> None:
        if done >= 32:  # after the first upsert batch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.ingest([folder], cname, chunk_tokens=40, overlap=0, progress=interrupt)
    partial = store.collection(cname).count()
    assert partial == 32
    report = store.ingest([folder], cname, chunk_tokens=40, overlap=0)
    assert report.added == report.chunks - partial and store.collection(cname).count() == report.chunks
