"""Real ChromaDB and the real MiniLM: ingest, idempotence, retrieval, filters, bad input."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from vivace.config import Config
from vivace.errors import InputError
from vivace_bench.synthetic import make_corpus
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
    with pytest.raises(InputError, match="3-512 characters"):
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


def test_a_file_named_with_bytes_that_are_not_utf8_is_skipped_and_the_rest_ingested(
    rconfig: Config, cname: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write(tmp_path / "names", {"good.md": "Heron Quay keeps a blue ferry."})
    bad = os.path.join(os.fsencode(folder), b"bad\xffname.md")  # a real name no UTF-8 decoder accepts
    with open(bad, "wb") as f:
        f.write(b"Text in a badly named file.")
    with caplog.at_level(logging.WARNING, logger="vivace.retrieval.inputs"):
        report = Store(rconfig).ingest([folder], cname)
    assert report.files == 1 and report.skipped == [(str(folder / "bad") + "\\xffname.md", "file name is not UTF-8")]
    assert "not UTF-8" in caplog.text
    assert [m["file"] for m in Store(rconfig).collection(cname).get()["metadatas"]] == ["good.md"]


def test_missing_path_and_bad_name_fail_before_the_embedder_loads(
    rconfig: Config, cname: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(name: str | None = None) -> None:
        raise AssertionError("the embedder must not load for bad input")

    monkeypatch.setattr("vivace.retrieval.embedder.load_sentence_model", no_model)
    store = Store(rconfig)
    good = write(tmp_path / "ok", {"a.md": "Some text."})
    with pytest.raises(InputError, match="no such file or folder: .*missing-one"):
        store.ingest([good, tmp_path / "missing-one"], cname)
    with pytest.raises(InputError, match="invalid collection name 'bad name!'"):
        store.ingest([good], "bad name!")
    assert cname not in store.names()  # nothing was created


@pytest.mark.parametrize("name", ["abc", "a" * 512, "a.b", "a-b_c.d", "A1", "ab", "a" * 513, "bad name!", "_abc",
                                  "abc-", "a..b", "192.168.1.1", "0.0.0.0", "999.1.1.1", "01.02.03.04", "1.2.3.4.5",
                                  "Äbc", "abc\n"])
def test_the_name_rule_is_chromas(rconfig: Config, name: str) -> None:
    """Our check, run before anything is created, accepts exactly the names Chroma accepts."""
    from vivace.retrieval.inputs import check_collection_name
    from vivace.retrieval.store import _client

    try:
        check_collection_name(name)
        ours = True
    except InputError as exc:
        ours = False
        assert "3-512 characters from [a-zA-Z0-9._-]" in str(exc) and "\n" not in str(exc)
    client = _client(rconfig)
    try:
        client.get_or_create_collection(name)
        theirs = True
        client.delete_collection(name)
    except Exception as exc:  # chromadb.errors.InvalidArgumentError
        assert "Validation error" in str(exc)
        theirs = False
    assert ours == theirs


def test_sync_prunes_files_gone_from_the_folder_and_nothing_else(rconfig: Config, cname: str, tmp_path: Path) -> None:
    (tmp_path / "sync" / "sub").mkdir(parents=True)
    folder = write(tmp_path / "sync", {"keep.md": "Keep this fact about owls.", "gone.md": "The gone file talks of bats.",
                                       "emptied.md": "Soon empty, it talks of moles.", "sub/deep.md": "Deep file on voles."})
    other = write(tmp_path / "other", {"x.md": "Another folder on newts."})
    store = Store(rconfig)
    store.ingest([folder, other], cname)
    (folder / "gone.md").unlink()
    (folder / "sub" / "deep.md").rename(folder / "sub" / "deep.txt.bak")  # no longer a text file: not ingested
    (folder / "emptied.md").write_text("")

    def files() -> set[str]:
        return {m["file"] for m in store.collection(cname).get()["metadatas"]}

    plain = store.ingest([folder], cname)  # the default: additive, only changed files are updated
    assert plain.pruned == 0 and files() == {"keep.md", "gone.md", "deep.md", "x.md"}  # emptied.md's chunk went
    synced = store.ingest([folder], cname, sync=True)
    assert synced.pruned == 2 and synced.added == 0
    assert synced.pruned_sources == sorted(str((folder / p).resolve()) for p in ("gone.md", "sub/deep.md"))
    assert files() == {"keep.md", "x.md"}  # the other folder's chunks are not this ingest's business
    assert store.ingest([folder], cname, sync=True).pruned == 0


def test_sync_interrupted_before_it_prunes_is_completed_by_a_rerun(rconfig: Config, cname: str, tmp_path: Path) -> None:
    folder = write(tmp_path / "si", {"old.md": "The old file mentions lynxes."})
    store = Store(rconfig)
    store.ingest([folder], cname)
    (folder / "old.md").unlink()
    write(folder, {f"n{i}.md": " ".join(f"New file {i} line {j} names w{i}x{j}." for j in range(12)) for i in range(12)})

    def interrupt(done: int, total: int) -> None:
        if done >= 32:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.ingest([folder], cname, chunk_tokens=40, overlap=0, progress=interrupt, sync=True)
    col = store.collection(cname)
    assert len(col.get(where={"file": "old.md"})["ids"]) == 1  # pruning comes last: nothing lost yet
    report = store.ingest([folder], cname, chunk_tokens=40, overlap=0, sync=True)
    assert report.pruned == 1 and col.count() == report.chunks
