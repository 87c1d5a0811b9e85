"""The torch pieces every quantization study shares: the model in fp32, its perplexity, the thread count, the calibration text.

``fake_quant`` (the emulated study), ``kv_calibrate`` (FP8 KV scales) and
``smooth_quant`` (SmoothQuant's folds) all import from here and never from
each other upward, so the three form no import cycle.

Threads: two OpenMP threads on a 2-core machine that other processes also
load run 3-4x *slower* than one (every small op waits on a descheduled
thread; measured 11 s vs 3.1 s per 512-token forward at load ~3.7). The
studies therefore pick their thread count from the load average unless told.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Iterator


def calibration_text() -> str:
    """The bundled calibration text (not the evaluation text; source in data/SOURCES.md)."""
    return resources.files("vivace_bench").joinpath("data/calib_text.txt").read_text(encoding="utf-8")


def pick_threads(threads: int | str = "auto") -> int:
    """Torch intra-op threads for the study: ``"auto"`` leaves only the cores the load average leaves free.

    At least one; never more than torch's current setting. See the module
    docstring for why oversubscribing is so costly here.
    """
    import torch

    current = torch.get_num_threads()
    if threads != "auto":
        return max(1, int(threads))
    try:
        busy = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return current
    free = (os.cpu_count() or current) - round(busy)
    return max(1, min(current, free))


@contextmanager
def study_threads(threads: int | str = "auto") -> Iterator[int]:
    """Run the block with ``pick_threads(threads)`` torch threads; restore the previous count after."""
    import torch

    previous, chosen = torch.get_num_threads(), pick_threads(threads)
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(previous)


def load_model(model_dir: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()  # type: ignore[no-untyped-call]  # transformers: PreTrainedModel.eval is unannotated
    return model


def torch_perplexity(model: Any, token_ids: list[int], window: int = 1024) -> float:
    """exp(mean NLL) over non-overlapping windows, every token after each window's first.

    The same windows and tokens as ``scoring.engine_perplexity`` (a trailing
    piece of one token is dropped), so the two are directly comparable.
    """
    import torch

    nll, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(token_ids), window):
            piece = token_ids[start : start + window]
            if len(piece) < 2:
                continue
            x = torch.tensor([piece])
            logp = torch.log_softmax(model(x).logits[0, :-1].float(), dim=-1)
            nll -= float(logp.gather(1, x[0, 1:].unsqueeze(1)).sum())
            count += len(piece) - 1
    if not count:
        raise ValueError("no tokens to score")
    return math.exp(nll / count)
