"""Prompt compression: coarse (embedding) and fine (self-information) pruning, a budget, a cost model.

Compression sits below retrieval: it imports only runtime, config, errors and
trace from vivace, and takes its sentence embedder as an ``Embedder``.
"""

from __future__ import annotations

from vivace.compression.base import CompressionStats, Counting, Embedder, estimate_tokens, protected_spans, strip_marks
from vivace.compression.budget import (
    PromptCompressor,
    acompress_history,
    backend_counter,
    compress_history,
    hf_counter,
)
from vivace.compression.coarse import CoarseCompressor
from vivace.compression.cost import CostModel, Decision, get_cost_model
from vivace.compression.fine import FineCompressor

__all__ = [
    "CoarseCompressor",
    "CompressionStats",
    "CostModel",
    "Counting",
    "Decision",
    "Embedder",
    "FineCompressor",
    "PromptCompressor",
    "acompress_history",
    "backend_counter",
    "compress_history",
    "estimate_tokens",
    "get_cost_model",
    "hf_counter",
    "protected_spans",
    "strip_marks",
]
