"""Retrieval: ChromaDB with the bundled MiniLM embedder; ingest, chunk, retrieve, and RAG context."""

from __future__ import annotations

from vivace.retrieval.store import Chunk, IngestReport, Store, retrieve

__all__ = ["Chunk", "IngestReport", "Store", "retrieve", "prepare_context", "compress_history"]


def __getattr__(name: str):  # lazy: rag pulls in the compressors
    if name == "prepare_context":
        from vivace.retrieval.rag import prepare_context

        return prepare_context
    if name == "compress_history":
        from vivace.compression.budget import compress_history

        return compress_history
    raise AttributeError(name)
