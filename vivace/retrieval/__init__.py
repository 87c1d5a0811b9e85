"""Retrieval: ChromaDB with the bundled MiniLM embedder; ingest, chunk, retrieve, and RAG context.

Every name loads on first use: ``vivace.retrieval.inputs`` (the checks ingest
runs before anything heavy) must not pull in Chroma and the embedder.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Chunk", "IngestReport", "Store", "retrieve", "prepare_context", "compress_history"]


def __getattr__(name: str) -> Any:  # lazy: store pulls in Chroma, rag the compressors
    if name in ("Chunk", "IngestReport", "Store", "retrieve"):
        from vivace.retrieval import store

        return getattr(store, name)
    if name == "prepare_context":
        from vivace.retrieval.rag import prepare_context

        return prepare_context
    if name == "compress_history":
        from vivace.compression.budget import compress_history

        return compress_history
    raise AttributeError(name)
