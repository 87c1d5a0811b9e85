"""ChromaDB storage: ingest files as chunks, list and drop collections, retrieve top-k.

Why it is built this way:
- ids are a hash of (source, chunk text), so re-ingesting is idempotent and
  only new chunks are embedded;
- each batch is one Chroma upsert (one SQLite transaction) and stale chunks of
  a changed file are deleted only after its new ones are in, so an ingest
  killed half-way leaves a consistent collection that a re-run completes;
  ``sync`` prunes the chunks of vanished files last, for the same reason;
- names and paths are checked (``inputs``) before the embedder loads;
- telemetry is off and the embedder is always ours (never Chroma's default).
"""

from __future__ import annotations

import builtins
import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlparse

from vivace.config import Config
from vivace.errors import InputError, VivaceError
from vivace.retrieval.chunking import chunk_id, chunk_text
from vivace.retrieval.embedder import BUNDLED, VivaceEmbedder
from vivace.retrieval.inputs import TEXT_SUFFIXES, check_collection_name, check_paths, iter_files, read_file, read_text, shown

__all__ = ["TEXT_SUFFIXES", "Chunk", "IngestReport", "Store", "iter_files", "read_text", "retrieve"]

log = logging.getLogger(__name__)

BATCH = 32
PAGE = 5000  # ids per Chroma get/delete: under its max batch size (5461 here)
_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


@dataclass
class Chunk:
    """One retrieved piece of context."""

    text: str
    score: float
    source: str
    id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "score": round(self.score, 4), "text": self.text}


@dataclass
class IngestReport:
    collection: str
    files: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 0
    added: int = 0
    removed: int = 0  # stale chunks of files that changed
    pruned: int = 0  # with sync: chunks of files that are gone from the ingested folders
    pruned_sources: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _client(config: Config) -> Any:
    """One client per store location per process (Chroma refuses differing settings)."""
    import chromadb
    from chromadb.config import Settings

    key = config.chroma_url or str(config.chroma_dir.expanduser().resolve())
    with _clients_lock:
        if key not in _clients:
            settings = Settings(anonymized_telemetry=False)
            if config.chroma_url:
                url = urlparse(config.chroma_url if "://" in config.chroma_url else f"http://{config.chroma_url}")
                _clients[key] = chromadb.HttpClient(
                    host=url.hostname or "localhost",
                    port=url.port or (443 if url.scheme == "https" else 8000),
                    ssl=url.scheme == "https",
                    settings=settings,
                )
            else:
                Path(key).mkdir(parents=True, exist_ok=True)
                # Opening a new store creates its tables; two processes doing it at once (two ingests of a
                # fresh home) collide ("table collections already exists"), so the first open is serialized.
                with open(Path(key) / ".vivace-open.lock", "w") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    _clients[key] = chromadb.PersistentClient(path=key, settings=settings)
        return _clients[key]


class Store:
    """A Chroma store (local folder or server) with vivace's embedder."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.embedder = VivaceEmbedder(config.embedder or BUNDLED)
        self.client = _client(config)

    # -- collections -------------------------------------------------------
    def collection(self, name: str, create: bool = False) -> Any:
        """The collection, created if asked; a missing one is a clear error."""
        from chromadb.errors import InvalidArgumentError, NotFoundError

        check_collection_name(name)
        try:
            if create:
                return self.client.get_or_create_collection(
                    name, embedding_function=self.embedder, configuration={"hnsw": {"space": "cosine"}}
                )
            return self.client.get_collection(name, embedding_function=self.embedder)
        except NotFoundError:
            known = ", ".join(self.names()) or "none"
            raise InputError(f"collection {name!r} not found (collections: {known}); create it with vivace ingest") from None
        except InvalidArgumentError as exc:  # a server whose rules are stricter than the ones checked above
            raise InputError(f"collection {name!r} refused by Chroma: {str(exc).splitlines()[0]}") from None
        except ValueError as exc:
            if "conflict" in str(exc).lower():
                raise VivaceError(f"collection {name!r} was built with another embedder: {exc}") from None
            raise

    def names(self) -> list[str]:
        return sorted(c if isinstance(c, str) else c.name for c in self.client.list_collections())

    def list(self) -> list[dict[str, Any]]:
        out = []
        for name in self.names():
            col = self.client.get_collection(name)
            ef = (col.configuration_json or {}).get("embedding_function") or {}
            model = (ef.get("config") or {}).get("model", ef.get("name", "?"))
            out.append({"name": name, "chunks": col.count(), "embedder": model})
        return out

    def drop(self, name: str) -> None:
        self.collection(name)  # the clear error when missing
        self.client.delete_collection(name)

    # -- ingest ------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[str | Path],
        collection: str,
        chunk_tokens: int | None = None,
        overlap: int | None = None,
        metadata: dict[str, str | int | float | bool] | None = None,
        progress: Callable[[int, int], None] | None = None,
        sync: bool = False,
    ) -> IngestReport:
        """Chunk, embed and upsert; ``progress(done, total)`` counts chunks to embed.

        The name and the paths are checked first, before the embedder loads or
        Chroma creates anything. With ``sync``, chunks whose source file lies
        under one of the folders in ``paths`` but was not ingested this time
        (deleted, renamed, now skipped) are removed, last, after every upsert.
        """
        t0 = time.perf_counter()
        check_collection_name(collection)
        roots = check_paths(paths)
        report = IngestReport(collection)
        files = list(iter_files(roots, report.skipped))
        if not files:  # said before the embedder loads
            raise InputError("nothing to ingest: no text files in " + ", ".join(shown(p) for p in roots))
        size = chunk_tokens or self.config.chunk_tokens
        over = self.config.chunk_overlap if overlap is None else overlap
        if size > self.embedder.max_tokens:
            log.warning("chunks of %d tokens exceed the embedder's %d; the tail is not embedded", size, self.embedder.max_tokens)
        planned = self._plan(files, size, over, metadata or {}, report)
        if not any(rows for _, rows in planned):
            raise InputError("nothing to ingest: no non-empty UTF-8 text in " + ", ".join(shown(p) for p in roots))
        col = self.collection(collection, create=True)
        todo: list[tuple[str, str, dict[str, Any]]] = []
        stale: list[str] = []
        for source, rows in planned:
            report.chunks += len(rows)
            ids = list(rows)
            present = set(col.get(ids=ids, include=[])["ids"]) if ids else set()
            todo.extend((i, *rows[i]) for i in ids if i not in present)
            old = set(col.get(where={"source": source}, include=[])["ids"])
            stale.extend(sorted(old - set(ids)))
        done = 0
        if progress:
            progress(0, len(todo))
        for b in range(0, len(todo), BATCH):
            batch = todo[b : b + BATCH]
            vectors = self.embedder.encode([t for _, t, _ in batch])
            col.upsert(
                ids=[i for i, _, _ in batch],
                documents=[t for _, t, _ in batch],
                metadatas=[m for _, _, m in batch],
                embeddings=vectors,
            )
            done += len(batch)
            if progress:
                progress(done, len(todo))
        _delete(col, stale)
        report.added, report.removed = len(todo), len(stale)
        if sync:
            self._prune(col, [r for r in roots if r.is_dir()], {source for source, _ in planned}, report)
        report.seconds = time.perf_counter() - t0
        log.info("ingested %d files into %s: %d chunks, %d new, %d removed, %d pruned", report.files, collection,
                 report.chunks, report.added, report.removed, report.pruned)
        return report

    def _plan(self, files: builtins.list[Path], size: int, over: int, metadata: dict[str, Any],
              report: IngestReport) -> builtins.list[tuple[str, dict[str, tuple[str, dict[str, Any]]]]]:
        """Per readable file: its source and its chunks by id (none for an empty file, so its old ones go)."""
        planned: list[tuple[str, dict[str, tuple[str, dict[str, Any]]]]] = []
        for path in files:
            text, why = read_file(path)
            if text is None:
                report.skipped.append((shown(path), why))
                continue
            source = str(path.resolve())
            rows: dict[str, tuple[str, dict[str, Any]]] = {}
            for ch in chunk_text(text, size, over, self.embedder.count_tokens):
                meta = {"source": source, "file": path.name, "chunk": ch.index, "start": ch.start, "tokens": ch.tokens}
                meta.update(metadata)
                rows.setdefault(chunk_id(source + "\x00" + ch.text), (ch.text, meta))
            planned.append((source, rows))
            report.files += 1
        return planned

    def _prune(self, col: Any, folders: builtins.list[Path], kept: set[str], report: IngestReport) -> None:
        """``--sync``: remove the chunks of files under ``folders`` that this ingest did not take."""
        scopes = tuple(str(f.resolve()).rstrip(os.sep) + os.sep for f in folders)
        if not scopes:
            return
        gone: list[str] = []
        sources: set[str] = set()
        for cid, meta in _metadatas(col):
            source = str((meta or {}).get("source", ""))
            if source.startswith(scopes) and source not in kept:
                gone.append(cid)
                sources.add(source)
        _delete(col, gone)
        report.pruned, report.pruned_sources = len(gone), sorted(shown(s) for s in sources)

    # -- retrieve ----------------------------------------------------------
    def retrieve(self, query: str, k: int, collection: str, where: dict[str, Any] | None = None) -> builtins.list[Chunk]:
        """Top-k chunks by cosine similarity (score in [-1, 1], higher is closer)."""
        if not query.strip():
            raise InputError("empty query")
        col = self.collection(collection)
        vector = self.embedder.encode([query])
        res = col.query(query_embeddings=vector, n_results=max(1, k), where=where or None, include=["documents", "metadatas", "distances"])
        out = []
        for cid, doc, meta, dist in zip(res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0]):
            meta = dict(meta or {})
            out.append(Chunk(doc, 1.0 - float(dist), str(meta.get("source", "")), cid, meta))
        return out


def _metadatas(col: Any) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """Every chunk's id and metadata, a page at a time."""
    offset = 0
    while True:
        page = col.get(include=["metadatas"], limit=PAGE, offset=offset)
        yield from zip(page["ids"], page["metadatas"] or [None] * len(page["ids"]))
        if len(page["ids"]) < PAGE:
            return
        offset += PAGE


def _delete(col: Any, ids: list[str]) -> None:
    """Delete ``ids`` in pages; each page is one transaction, and any prefix of them leaves a consistent store."""
    for b in range(0, len(ids), PAGE):
        col.delete(ids=ids[b : b + PAGE])


def retrieve(query: str, k: int, collection: str, where: dict[str, Any] | None = None, config: Config | None = None) -> list[Chunk]:
    """The DESIGN's ``Retriever.retrieve`` as a function over the configured store."""
    return Store(config or Config()).retrieve(query, k, collection, where)
