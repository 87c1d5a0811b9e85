"""Fine compression: drop the words a small causal LM finds most predictable.

The algorithm is Selective Context (Li et al., 2023, "Compressing Context to
Enhance Inference Efficiency of Large Language Models", EMNLP,
arXiv:2310.06201): the self-information of a token is ``-log p(x_t | x_<t)``,
a lexical unit's is the sum over its tokens, and the least informative units
are removed until a target size is reached. As in LLMLingua (Jiang et al.,
2023, arXiv:2310.05736) and LongLLMLingua, the scorer is conditioned on the
question (it is put before the text), so words the question makes
predictable-and-relevant are not judged in isolation. Digits, likely named
entities, sentence-final punctuation and caller-marked spans are protected.

It runs in torch on CPU with the embedded SmolLM2-135M or any Hugging Face
causal LM. The environment notes explain why it is slow relative to prefill
on this machine; the cost model decides whether it is worth running.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vivace.compression.base import CompressionStats, TokenCounter, merge_spans, overlaps, protected_spans, strip_marks

log = logging.getLogger(__name__)

_UNIT = re.compile(r"\s*(?:[\w'’-]+|[^\w\s]+)")
_SENTENCE_PUNCT = re.compile(r"[.!?;:]+")


@dataclass
class Unit:
    """A word or punctuation run, with its leading whitespace, tokens and self-information."""

    start: int
    end: int
    text: str
    tokens: int = 0
    info: float = 0.0
    protected: bool = False


class FineCompressor:
    """Self-information pruning with a small causal LM (loaded lazily, once)."""

    method = "fine"

    def __init__(
        self,
        model_path: str | Path | None = None,
        home: Path | None = None,
        counter: TokenCounter | None = None,
        window: int = 1024,
        carry: int = 64,
    ) -> None:
        self._model_path = model_path
        self._home = home
        self.window = window
        self.carry = carry
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._counter = counter

    # -- model ---------------------------------------------------------------
    def _load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = self._model_path
            if path is None:
                from vivace.runtime.models import EMBEDDED, prepare

                path = prepare(EMBEDDED, self._home or Path("~/.cache/vivace").expanduser())
            t0 = time.perf_counter()
            self._tokenizer = AutoTokenizer.from_pretrained(str(path))
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
            model.eval()  # type: ignore[no-untyped-call]  # transformers: PreTrainedModel.eval is unannotated
            self._model = model
            log.info("fine compressor loaded %s in %.1f s", path, time.perf_counter() - t0)

    @property
    def tokenizer(self) -> Any:
        self._load()
        return self._tokenizer

    def count(self, text: str) -> int:
        if self._counter is not None:
            return self._counter(text)
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    # -- scoring ---------------------------------------------------------------
    def token_information(self, text: str, query: str = "") -> tuple[list[tuple[int, int]], list[float]]:
        """Char offsets and self-information (nats) of each token of ``text``, given the query."""
        import torch

        self._load()
        enc = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = enc["input_ids"]
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        prefix = self._tokenizer.encode(f"Question: {query}\nText:" if query else "Text:", add_special_tokens=False)
        info: list[float] = []
        with torch.inference_mode():
            for s in range(0, len(ids), self.window):
                e = min(len(ids), s + self.window)
                ctx = ids[max(0, s - self.carry) : s]
                seq = prefix + ctx + ids[s:e]
                logits = self._model(torch.tensor([seq])).logits[0].float()
                logp = torch.log_softmax(logits[:-1], dim=-1)
                targets = torch.tensor(seq[1:])
                nll = -logp.gather(1, targets[:, None])[:, 0]
                info.extend(nll[len(prefix) + len(ctx) - 1 :].tolist())
        return offsets, info

    def units(self, text: str, query: str, keep: list[tuple[int, int]]) -> list[Unit]:
        """Words and punctuation runs scored by the sum of their tokens' self-information."""
        units = [Unit(m.start(), m.end(), m.group(0)) for m in _UNIT.finditer(text)]
        if not units:
            return units
        offsets, info = self.token_information(text, query)
        starts = [u.start for u in units]
        import bisect

        for (a, b), value in zip(offsets, info):
            # The unit holding the token's first non-space character.
            first = a + (len(text[a:b]) - len(text[a:b].lstrip())) if b > a else a
            i = max(0, bisect.bisect_right(starts, first) - 1)
            units[i].tokens += 1
            units[i].info += value
        for u in units:
            core = u.text.strip()
            u.protected = overlaps(keep, u.start + (len(u.text) - len(u.text.lstrip())), u.end) or bool(
                _SENTENCE_PUNCT.fullmatch(core)
            )
        return units

    # -- compression -------------------------------------------------------------
    def compress(
        self,
        text: str,
        query: str = "",
        budget: int | None = None,
        ratio: float | None = None,
        protect: tuple[str, ...] | list[str] = (),
    ) -> tuple[str, CompressionStats]:
        """Prune to ``budget`` tokens, or to original/``ratio``; protected units always stay."""
        t0 = time.perf_counter()
        text, marked = strip_marks(text)
        original = self.count(text)
        if budget is None:
            budget = math.ceil(original / ratio) if ratio and ratio > 0 else original
        if original <= budget:
            return text, CompressionStats.make(original, original, time.perf_counter() - t0, "none", budget_tokens=budget)
        keep = merge_spans(marked + protected_spans(text, protect))
        units = self.units(text, query, keep)
        order = sorted((i for i, u in enumerate(units) if not u.protected), key=lambda i: units[i].info)
        dropped: set[int] = set()
        target = budget
        out, n = text, original
        for _ in range(4):  # re-tokenizing the joined text shifts counts a little; re-aim
            total = sum(u.tokens for u in units)
            dropped = set()
            for i in order:
                if total <= target:
                    break
                dropped.add(i)
                total -= units[i].tokens
            out = self._join(units, dropped)
            n = self.count(out)
            if n <= budget * 1.02:
                break
            target -= n - budget
        protected = sum(u.tokens for u in units if u.protected)
        seconds = time.perf_counter() - t0
        log.debug("fine: %d -> %d tokens (budget %d) in %.3f s", original, n, budget, seconds)
        return out, CompressionStats.make(original, n, seconds, self.method, budget_tokens=budget, protected_tokens=protected)

    @staticmethod
    def _join(units: list[Unit], dropped: set[int]) -> str:
        """Kept units with their whitespace; a dropped run that held a line break leaves one."""
        parts: list[str] = []
        pending_break = ""
        for i, u in enumerate(units):
            lead = u.text[: len(u.text) - len(u.text.lstrip())]
            if i in dropped:
                if "\n" in lead:
                    pending_break = "\n\n" if "\n\n" in lead else pending_break or "\n"
                continue
            core = u.text.lstrip()
            if pending_break and parts:
                parts.append(pending_break + core)
            elif parts and not lead and (i - 1) in dropped and core[0].isalnum():
                parts.append(" " + core)  # the unit was glued to a dropped word: keep words apart
            else:
                parts.append(u.text if parts else core)
            pending_break = ""
        return "".join(parts)
