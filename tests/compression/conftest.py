"""One compressor per session: the real SmolLM2 scorer (torch, CPU) and the real MiniLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from vivace.compression.budget import PromptCompressor, hf_counter
from vivace.retrieval.embedder import VivaceEmbedder

TEXT = (
    "# Harbor notes\n\n"
    "The old harbor of Saltmere was rebuilt in 1887 after a winter storm destroyed the eastern pier. "
    "Fishermen still gather there every morning to mend their nets and talk about the weather. "
    "The harbor master, Ingrid Vasquell, keeps a ledger of every boat that enters or leaves. "
    "On quiet days the water is so calm that you can see the stones on the bottom. "
    "Seagulls circle above the market stalls, hoping for scraps of fish and bread. "
    "The secret password for the cold storage is blue heron at dusk. "
    "In summer the town hosts a regatta with boats painted in bright colours, and children race paper boats along the canal.\n\n"
    "Visitors often remark that the air smells of salt, tar and fresh bread from the bakery near the quay. "
    "The lighthouse at the end of the pier has been automated since 1962, but the keeper's cottage is still lived in. "
    "A small museum near the square displays old maps, ropes, anchors and a collection of carved wooden birds. "
    "Most evenings the tavern serves a thick fish stew with dark bread, and people sing old songs until late."
)


@pytest.fixture(scope="session")
def compressor(model_dir: Path) -> PromptCompressor:
    return PromptCompressor(hf_counter(model_dir), VivaceEmbedder(), fine_model=model_dir)
