"""ChromaDB storage: ingest files as chunks, list and drop collections, retrieve top-k.

Why it is built this way:
- ids are a hash of (source, chunk text), so re-ingesting is idempotent and
  only new chunks are embedded;
- each batch is one Chroma upsert (one SQLite transaction) and stale chunks of
  a changed file are deleted only after its new ones are in, so an ingest
  killed half-way leaves a consistent collection that a re-run completes;
- telemetry is off and the embedder is always ours (never Chroma's default).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlparse

from vivace.config import Config
from vivace.errors import InputError, VivaceError
from vivace.retrieval.chunking import chunk_id, chunk_text
from vivace.retrieval.embedder import BUNDLED, VivaceEmbedder

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}
BATCH = 32
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
    removed: int = 0
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
                _clients[key] = chromadb.PersistentClient(path=key, settings=settings)
        return _clients[key]


def iter_files(paths: Iterable[str | Path]) -> Iterable[Path]:
    """Files named directly, and text/markdown files under named folders (hidden ones skipped)."""
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for sub in sorted(path.rglob("*")):
                rel = sub.relative_to(path).parts
                if sub.is_file() and sub.suffix.lower() in TEXT_SUFFIXES and not any(p.startswith(".") for p in rel):
                    yield sub
        elif path.is_file():
            yield path
        else:
            raise InputError(f"no such file or folder: {path}")


def read_text(path: Path) -> str | None:
    """The file's text, or None (with a warning) when it is binary or not UTF-8."""
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        log.warning("skipping %s: binary file", path)
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        log.warning("skipping %s: not UTF-8 (byte %d)", path, exc.start)
        return None


class Store:
    """A Chroma store (local folder or server) with vivace's embedder."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.embedder = VivaceEmbedder(config.embedder or BUNDLED)
        self.client = _client(config)

    # -- collections -------------------------------------------------------
    def _check_name(self, name: str) -> None:
        if not 3 <= len(name) <= 512:
            raise InputError(f"collection name must have 3 to 512 characters: {name!r}")

    def collection(self, name: str, create: bool = False) -> Any:
        """The collection, created if asked; a missing one is a clear error."""
        from chromadb.errors import NotFoundError

        self._check_name(name)
        try:
            if create:
                return self.client.get_or_create_collection(
                    name, embedding_function=self.embedder, configuration={"hnsw": {"space": "cosine"}}
                )
            return self.client.get_collection(name, embedding_function=self.embedder)
        except NotFoundError:
            known = ", ".join(self.names()) or "none"
            raise InputError(f"collection {name!r} not found (collections: {known}); create it with vivace ingest") from None
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
    ) -> IngestReport:
        """Chunk, embed and upsert; ``progress(done, total)`` counts chunks to embed."""
        t0 = time.perf_counter()
        size = chunk_tokens or self.config.chunk_tokens
        over = self.config.chunk_overlap if overlap is None else overlap
        if size > self.embedder.max_tokens:
            log.warning("chunks of %d tokens exceed the embedder's %d; the tail is not embedded", size, self.embedder.max_tokens)
        report = IngestReport(collection)
        files = list(iter_files(paths))
        planned: list[tuple[str, dict[str, tuple[str, dict[str, Any]]]]] = []
        for path in files:
            text = read_text(path)
            if text is None:
                report.skipped.append((str(path), "binary or not UTF-8"))
                continue
            source = str(path.resolve())
            rows: dict[str, tuple[str, dict[str, Any]]] = {}
            for ch in chunk_text(text, size, over, self.embedder.count_tokens):
                meta = {"source": source, "file": path.name, "chunk": ch.index, "start": ch.start, "tokens": ch.tokens}
                meta.update(metadata or {})
                rows.setdefault(chunk_id(source + "\x00" + ch.text), (ch.text, meta))
            if rows:
                planned.append((source, rows))
            report.files += 1
        if not planned:
            raise InputError("nothing to ingest: no non-empty UTF-8 text in " + ", ".join(map(str, paths)))
        col = self.collection(collection, create=True)
        todo: list[tuple[str, str, dict[str, Any]]] = []
        stale: list[str] = []
        for source, rows in planned:
            report.chunks += len(rows)
            ids = list(rows)
            present = set(col.get(ids=ids, include=[])["ids"])
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
        if stale:
            col.delete(ids=stale)
        report.added, report.removed = len(todo), len(stale)
        report.seconds = time.perf_counter() - t0
        log.info("ingested %d files into %s: %d chunks, %d new, %d removed", report.files, collection, report.chunks, report.added, report.removed)
        return report

    # -- retrieve ----------------------------------------------------------
    def retrieve(self, query: str, k: int, collection: str, where: dict[str, Any] | None = None) -> list[Chunk]:
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


def retrieve(query: str, k: int, collection: str, where: dict[str, Any] | None = None, config: Config | None = None) -> list[Chunk]:
    """The DESIGN's ``Retriever.retrieve`` as a function over the configured store."""
    return Store(config or Config()).retrieve(query, k, collection, where)
