"""`vivace bench quant`: what each quantization costs in quality and buys in memory and speed.

Every configuration gets its own engine, one after the other in this process,
with the same KV-cache budget, the same text, the same items and the same
token budget; deltas are against the bf16 baseline of the same run. A
configuration this machine cannot run becomes a row with ``status`` and the
reason, never a crash. A torch fake-quant study (Qllm-Eval's W/A/KV sweep)
follows on the same text.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from vivace_bench.long_context import measure_agents, tasks_that_fit
from vivace_bench.quant_checkpoint import checkpoint_for
from vivace_bench.quant_configs import BASELINE, QuantConfig, unsupported_reason

if TYPE_CHECKING:
    from vivace_bench.kv_calibrate import KVCalibration
    from vivace_bench.smooth_quant import Smoothing

log = logging.getLogger(__name__)


async def _speed(backend: Any, tokens: int, repeats: int) -> tuple[list[float], list[float]]:
    """Each round's single-stream decode and 16-way tok/s, after a warm-up at both sizes.

    The 16-way warm-up matters for int8: oneDNN builds a kernel per new matrix
    shape on first use, and the batch's shapes are new to a fresh engine.
    """
    from vivace_bench.backend_bench import measure_level

    await measure_level(backend, 1, 4)  # warm-ups, not reported
    await measure_level(backend, 16, 8)
    single = [(await measure_level(backend, 1, tokens))["per_stream_decode_tok_s"] for _ in range(repeats)]
    batch = [(await measure_level(backend, 16, tokens))["tok_s"] for _ in range(repeats)]
    return single, batch


async def measure_config(
    config: QuantConfig,
    model_path: str,
    token_ids: list[int],
    items: list[dict[str, Any]],
    args: argparse.Namespace,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """One engine, every measurement; the engine is shut down whatever happens."""
    from vivace_bench.scoring import engine_perplexity, mc_accuracy
    from vivace.runtime.vllm_options import EngineOptions
    from vivace.runtime.vllm_engine import VLLMBackend

    options = EngineOptions(
        model=model_path,
        dtype=config.dtype,
        quantization=config.quantization if config.checkpoint is None else None,
        kv_cache_dtype=config.kv_cache_dtype,
        kv_cache_space_gib=args.kv_space_gib,
        max_num_seqs=64 if getattr(args, "agents", False) else 16,  # the long-context round runs more at once
        served_model_name=config.name,
        enforce_eager=not config.compiled,
    )
    backend = await VLLMBackend.start(options)
    try:
        say(f"  {config.name}: engine up in {backend.load_s:.1f} s, KV {backend.kv_capacity_tokens} tokens")
        ppl = await engine_perplexity(backend, token_ids, args.window)
        say(f"  {config.name}: perplexity {ppl.perplexity:.3f} over {ppl.tokens_scored} tokens")
        mc = await mc_accuracy(backend, items)
        say(f"  {config.name}: MC accuracy {mc['accuracy']:.3f} (norm {mc['accuracy_norm']:.3f}, chance {mc['chance']:.2f})")
        singles, batches = await _speed(backend, args.tokens, args.repeats)
        decode, batch16 = statistics.median(singles), statistics.median(batches)
        say(f"  {config.name}: decode {decode:.1f} tok/s, 16-way {batch16:.1f} tok/s "
            f"(rounds: {' '.join(f'{b:.0f}' for b in batches)})")
        context = getattr(args, "agents_context", 4096)
        agents: dict[str, Any] = {"agents": tasks_that_fit(backend.kv_capacity_tokens, context), "agents_context": context}
        if getattr(args, "agents", False):
            agents = await measure_agents(backend, token_ids, context, args.tokens)
            say(f"  {config.name}: {agents['agents']} concurrent {context}-token tasks, {agents.get('agents_tok_s') or 0:.1f} tok/s")
        return {
            **agents,
            "status": "ok",
            "perplexity": ppl.perplexity,
            "tokens_scored": ppl.tokens_scored,
            "mc_accuracy": mc["accuracy"],
            "mc_accuracy_norm": mc["accuracy_norm"],
            "mc_chance": mc["chance"],
            "kv_capacity_tokens": backend.kv_capacity_tokens,
            "decode_tok_s": decode,
            "batch16_tok_s": batch16,
            "speed_rounds": {"decode_tok_s": [round(x, 2) for x in singles], "batch16_tok_s": [round(x, 2) for x in batches]},
            "load_s": backend.load_s,
        }
    finally:
        await backend.aclose()


def _row(config: QuantConfig) -> dict[str, Any]:
    return {
        "name": config.name,
        "weights": config.weights,
        "kv": config.kv,
        "dtype": config.dtype,
        "quantization": config.quantization or config.checkpoint,
        "kv_cache_dtype": config.kv_cache_dtype,
        "compiled": config.compiled,
        "status": "pending",
        "reason": None,
        **dict.fromkeys(
            ("perplexity", "ppl_delta_pct", "mc_accuracy", "kv_capacity_tokens", "kv_capacity_vs_baseline", "decode_tok_s", "batch16_tok_s", "load_s",
             "agents", "agents_tok_s")
        ),
    }


def add_deltas(rows: list[dict[str, Any]]) -> None:
    """Deltas against the baseline row of the same run; none when the baseline did not run."""
    base = next((r for r in rows if r["name"] == BASELINE and r["status"] == "ok"), None)
    for row in rows:
        if base is None or row["status"] != "ok":
            continue
        row["ppl_delta_pct"] = 100.0 * (row["perplexity"] / base["perplexity"] - 1.0)
        if row["kv_capacity_tokens"] and base["kv_capacity_tokens"]:
            row["kv_capacity_vs_baseline"] = row["kv_capacity_tokens"] / base["kv_capacity_tokens"]


async def run_engine_configs(
    configs: list[QuantConfig],
    model_dir: Path,
    checkpoints: dict[str, str],
    token_ids: list[int],
    items: list[dict[str, Any]],
    args: argparse.Namespace,
    home: Path,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    rows = []
    for config in configs:
        row = _row(config)
        rows.append(row)
        reason = unsupported_reason(config, model_dir, checkpoints)
        if reason:
            row.update(status="unsupported", reason=reason)
            say(f"  {config.name}: unsupported: {reason}")
            continue
        try:
            path = str(model_dir)
            if config.checkpoint == "given":
                path = checkpoints[config.name]
            elif config.checkpoint:
                path = str(await asyncio.to_thread(checkpoint_for, config.checkpoint, config.kv_cache_dtype, model_dir, home))
            row["engine"] = {"model": path, "dtype": config.dtype, "kv_cache_dtype": config.kv_cache_dtype,
                             "quantization": config.quantization if config.checkpoint is None else None,
                             "enforce_eager": not config.compiled}
            row.update(await measure_config(config, path, token_ids, items, args, say))
        except Exception as exc:  # one config failing must not lose the others
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            row.update(status="failed", reason=first[:300])
            say(f"  {config.name}: failed: {row['reason']}")
            log.debug("config %s failed", config.name, exc_info=True)
    add_deltas(rows)
    return rows


def plot(report: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    ok = [r for r in report["configs"] if r["status"] == "ok"]
    if ok:
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        names = [r["name"] for r in ok]
        axes[0].bar(names, [r["perplexity"] for r in ok], color="#4c72b0")
        axes[0].set_title("perplexity (engine)")
        axes[1].bar(names, [r["kv_capacity_tokens"] or 0 for r in ok], color="#55a868")
        axes[1].set_title(f"KV capacity, tokens at {report['kv_space_gib']:g} GiB")
        axes[2].bar(names, [r["batch16_tok_s"] for r in ok], color="#c44e52", label="16-way")
        axes[2].bar(names, [r["decode_tok_s"] for r in ok], color="#8172b2", label="single stream")
        axes[2].set_title("tok/s")
        axes[2].legend()
        for ax in axes:
            ax.tick_params(axis="x", rotation=30)
        fig.tight_layout()
        fig.savefig(out_dir / "quant.png", dpi=110)
        plt.close(fig)
        written.append("quant.png")
    study = [r for r in report.get("fake_quant", []) if r.get("perplexity") is not None]
    if study:
        fig, ax = plt.subplots(figsize=(10, 4))
        colors = {"weight": "#4c72b0", "activation": "#c44e52", "kv": "#55a868", "none": "#999999"}
        ax.bar([r["name"] for r in study], [r.get("ppl_delta_pct") or 0.0 for r in study], color=[colors.get(r.get("tensor"), "#999") for r in study])
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylabel("perplexity change, % (symlog)")
        ax.set_title("torch fake-quant study (round-to-nearest)")
        ax.tick_params(axis="x", rotation=30)
        fig.tight_layout()
        fig.savefig(out_dir / "fake_quant.png", dpi=110)
        plt.close(fig)
        written.append("fake_quant.png")
    return written


def run_fake_quant(
    model_dir: Path, text: str, max_tokens: int | None, window: int, home: Path | None = None, names: list[str] | None = None
) -> tuple[list[dict[str, Any]], Any]:
    """The torch study; its calibrated rows use the calibration the engine's checkpoints were written from."""
    from vivace_bench import fake_quant
    from vivace_bench.kv_calibrate import cached_calibration

    configs = tuple(c for c in fake_quant.STUDY if not names or c.name in names or c.tensor == "none")
    calibrations: dict[str, KVCalibration | Smoothing] | None = None
    if home is not None:
        modes = {c.fp8 for c in configs if c.fp8 and c.fp8.endswith(("-cal", "-scales"))}
        calibrations = {m: cached_calibration(model_dir, m.split("-")[0], home / "models", correct=m.endswith("-cal")) for m in modes}
        if any(c.smooth for c in configs):
            from vivace_bench.fake_quant import cached_smoothing

            calibrations[fake_quant.SMOOTHING] = cached_smoothing(model_dir, home / "models")
    rows = fake_quant.run_study(model_dir, text, max_tokens=max_tokens, window=window, configs=configs, calibrations=calibrations)
    return rows, fake_quant.ordering(rows)


# The fake-quant row that replays each engine configuration (see fake_quant's STUDY).
ENGINE_TWIN = {
    "fp32": "fp32",
    "kv-fp8-e4m3": "KV-fp8-e4m3",
    "kv-fp8-e5m2": "KV-fp8-e5m2",
    "kv-fp8-e4m3-scales": "KV-fp8-e4m3-scales",
    "kv-fp8-e4m3-cal": "KV-fp8-e4m3-cal",
    "kv-fp8-e5m2-cal": "KV-fp8-e5m2-cal",
    "w8a8-int8": "W8A8",
    "w8a8-int8+kv-fp8": "W8A8+KV-fp8-e4m3",
    "w8a8-int8+kv-fp8-cal": "W8A8+KV-fp8-e4m3-cal",
    "w8a8-int8-sq": "W8A8-SQ",
    "w8a8-int8-sq+kv-fp8-cal": "W8A8-SQ+KV-fp8-e4m3-cal",
}
_OLD_EMULATION = {"kv-fp8-e4m3": "KV-fp8-e4m3-rne"}


def engine_vs_emulation(configs: list[dict[str, Any]], study: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each engine row that ran beside the emulation of it: both perplexity deltas and their gap.

    The engine's delta is against its bf16 row, the emulation's against torch fp32:
    each is the cost of the quantization over the unquantized model it runs.
    """
    emulated = {r["name"]: r.get("ppl_delta_pct") for r in study}
    rows = []
    for row in configs:
        twin = ENGINE_TWIN.get(row["name"])
        if row["status"] != "ok" or row.get("ppl_delta_pct") is None or emulated.get(twin) is None:
            continue
        rows.append({
            "config": row["name"],
            "emulation": twin,
            "engine_pct": row["ppl_delta_pct"],
            "emulated_pct": emulated[twin],
            "gap_pct_points": row["ppl_delta_pct"] - emulated[twin],
            "old_emulation_pct": emulated.get(_OLD_EMULATION.get(row["name"], "")),
        })
    return rows
