"""Prompt compression: coarse (embedding) and fine (self-information) pruning, a budget, a cost model."""

from __future__ import annotations

from vivace.compression.base import CompressionStats, protected_spans, strip_marks
from vivace.compression.budget import (
    PromptCompressor,
    acompress_history,
    backend_counter,
    compress_history,
)
from vivace.compression.coarse import CoarseCompressor
from vivace.compression.cost import CostModel, Decision, get_cost_model
from vivace.compression.fine import FineCompressor

__all__ = [
    "CoarseCompressor",
    "CompressionStats",
    "CostModel",
    "Decision",
    "FineCompressor",
    "PromptCompressor",
    "acompress_history",
    "backend_counter",
    "compress_history",
    "get_cost_model",
    "protected_spans",
    "strip_marks",
]
