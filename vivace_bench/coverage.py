"""How much of one answer's content another answer carries, sentence by sentence, with the bundled MiniLM.

Why: a length ratio says SoT wrote as much as normal decoding, not that it
said the same things. Coverage of a reference by a candidate is the share of
the reference's words that sit in sentences with a counterpart in the
candidate: a candidate sentence whose embedding has cosine similarity at
least ``THRESHOLD`` with it (MiniLM puts paraphrases above ~0.7 and
sentences on the same topic that say different things around 0.3-0.5).
Both directions are reported: normal-in-SoT is what SoT left out,
SoT-in-normal what it added. ``soft`` is the threshold-free variant (the
mean best similarity, word-weighted), to show the threshold is not doing all
the work. No LLM and no network: the embedder is the package's own.
"""

from __future__ import annotations

import re
from typing import Any

THRESHOLD = 0.6
_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*+])\s*")


def sentences(text: str) -> list[str]:
    """The answer's sentences, without list numbering; pieces of fewer than three words are not content."""
    from vivace.compression.sentences import split_sentences

    out = []
    for span in split_sentences(text):
        piece = _NUMBERING.sub("", span.text).strip()
        if len(piece.split()) >= 3:
            out.append(piece)
    return out


def coverage(reference: str, candidate: str, model: Any = None) -> dict[str, float | None]:
    """``covered`` and ``soft`` (both 0-1) of ``reference`` by ``candidate``; None when the reference is empty."""
    ref, cand = sentences(reference), sentences(candidate)
    if not ref:
        return {"covered": None, "soft": None}
    if not cand:
        return {"covered": 0.0, "soft": 0.0}
    if model is None:
        from vivace.retrieval.embedder import load_sentence_model

        model = load_sentence_model()
    vectors = model.encode(ref + cand, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    best = (vectors[: len(ref)] @ vectors[len(ref):].T).max(axis=1)
    weights = [len(s.split()) for s in ref]
    total = sum(weights)
    covered = sum(w for w, b in zip(weights, best) if b >= THRESHOLD) / total
    soft = sum(w * max(0.0, float(b)) for w, b in zip(weights, best)) / total
    return {"covered": round(covered, 4), "soft": round(soft, 4)}


def mutual(normal: str, sot: str, model: Any = None) -> dict[str, float | None]:
    """Coverage both ways between a normal answer and a SoT answer to the same question."""
    there, back = coverage(normal, sot, model), coverage(sot, normal, model)
    return {"normal_in_sot": there["covered"], "sot_in_normal": back["covered"],
            "normal_in_sot_soft": there["soft"], "sot_in_normal_soft": back["soft"]}
