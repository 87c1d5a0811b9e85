"""The OpenAI-compatible server behind ``vivace serve``: this module only re-exports.

FastAPI is imported on first use of this package, never by ``vivace --help``.
"""

from __future__ import annotations

from vivace.serve.app import create_app
from vivace.serve.metrics import ServerMetrics
from vivace.serve.state import MODES, RUN_HEADER, ServerState
from vivace.serve.stream import AnswerStream

__all__ = ["AnswerStream", "MODES", "RUN_HEADER", "ServerMetrics", "ServerState", "create_app"]
