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
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from vivace.config import Config
from vivace.eval import write_report
from vivace.eval.quant_configs import BASELINE, QuantConfig, build_w8a8, by_name, unsupported_reason

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("quant", parents=parents, help="perplexity, MC accuracy, KV capacity and speed per quantization")
    p.add_argument("--out", default="runs/bench-quant", metavar="DIR", help="where report.json and plots go")
    p.add_argument("--configs", nargs="+", metavar="NAME", help="configs to run (default: all; bf16 is always added)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH", help="checkpoint for awq/gptq (GPU)")
    p.add_argument("--ppl-tokens", type=int, default=0, help="score only the first N tokens of the text (default: all)")
    p.add_argument("--window", type=int, default=1024, help="perplexity window in tokens (default 1024)")
    p.add_argument("--mc-items", type=int, default=0, help="score only the first N multiple-choice items (default: all)")
    p.add_argument("--kv-space-gib", type=float, default=1.0, help="the fixed KV-cache budget every config gets")
    p.add_argument("--tokens", type=int, default=128, help="output tokens per request in the speed runs")
    p.add_argument("--repeats", type=int, default=2, help="speed rounds per config; medians are reported")
    p.add_argument("--fake-quant-tokens", type=int, default=0, help="tokens for the torch study (default: all)")
    p.add_argument("--no-fake-quant", action="store_true", help="skip the torch fake-quant study")
    p.set_defaults(handler=cmd_bench_quant)


def _parse_checkpoints(values: list[str]) -> dict[str, str]:
    from vivace.errors import InputError

    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--checkpoint wants NAME=PATH, got {value!r}")
        if not Path(path).expanduser().is_dir():
            raise InputError(f"--checkpoint {name}: {path} is not a folder")
        out[name] = str(Path(path).expanduser())
    return out


async def _speed(backend: Any, tokens: int, repeats: int) -> tuple[float, float]:
    from vivace.eval.backend_bench import measure_level

    await measure_level(backend, 1, 4)  # warm-up, not reported
    single = [(await measure_level(backend, 1, tokens))["per_stream_decode_tok_s"] for _ in range(repeats)]
    batch = [(await measure_level(backend, 16, tokens))["tok_s"] for _ in range(repeats)]
    return statistics.median(single), statistics.median(batch)


async def measure_config(
    config: QuantConfig,
    model_path: str,
    token_ids: list[int],
    items: list[dict[str, Any]],
    args: argparse.Namespace,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """One engine, every measurement; the engine is shut down whatever happens."""
    from vivace.eval.scoring import engine_perplexity, mc_accuracy
    from vivace.runtime.vllm_engine import EngineOptions, VLLMBackend

    options = EngineOptions(
        model=model_path,
        dtype=config.dtype,
        quantization=config.quantization if config.checkpoint is None else None,
        kv_cache_dtype=config.kv_cache_dtype,
        kv_cache_space_gib=args.kv_space_gib,
        max_num_seqs=16,
        served_model_name=config.name,
    )
    backend = await VLLMBackend.start(options)
    try:
        say(f"  {config.name}: engine up in {backend.load_s:.1f} s, KV {backend.kv_capacity_tokens} tokens")
        ppl = await engine_perplexity(backend, token_ids, args.window)
        say(f"  {config.name}: perplexity {ppl.perplexity:.3f} over {ppl.tokens_scored} tokens")
        mc = await mc_accuracy(backend, items)
        say(f"  {config.name}: MC accuracy {mc['accuracy']:.3f} (norm {mc['accuracy_norm']:.3f}, chance {mc['chance']:.2f})")
        decode, batch16 = await _speed(backend, args.tokens, args.repeats)
        say(f"  {config.name}: decode {decode:.1f} tok/s, 16-way {batch16:.1f} tok/s")
        return {
            "status": "ok",
            "perplexity": ppl.perplexity,
            "tokens_scored": ppl.tokens_scored,
            "mc_accuracy": mc["accuracy"],
            "mc_accuracy_norm": mc["accuracy_norm"],
            "mc_chance": mc["chance"],
            "kv_capacity_tokens": backend.kv_capacity_tokens,
            "decode_tok_s": decode,
            "batch16_tok_s": batch16,
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
        "status": "pending",
        "reason": None,
        **dict.fromkeys(
            ("perplexity", "ppl_delta_pct", "mc_accuracy", "kv_capacity_tokens", "kv_capacity_vs_baseline", "decode_tok_s", "batch16_tok_s", "load_s")
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
            if config.checkpoint == "w8a8":
                path = str(build_w8a8(model_dir, home / "models" / f"{model_dir.name}-w8a8"))
            elif config.checkpoint == "given":
                path = checkpoints[config.name]
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


def run_fake_quant(model_dir: Path, text: str, max_tokens: int | None, window: int) -> tuple[list[dict[str, Any]], Any]:
    from vivace.eval import fake_quant

    rows = fake_quant.run_study(model_dir, text, max_tokens=max_tokens, window=window)
    return rows, fake_quant.ordering(rows)


async def cmd_bench_quant(args: argparse.Namespace, config: Config) -> int:
    import asyncio

    from rich.console import Console

    from vivace.cli import emit_json
    from vivace.errors import InputError
    from vivace.eval.backend_bench import machine_info
    from vivace.eval.scoring import bundled_mc_items, bundled_text
    from vivace.runtime.models import resolve

    if config.backend != "vllm":
        raise InputError("bench quant starts its own engines: it needs --backend vllm")
    if args.window < 16 or args.tokens < 2 or args.repeats < 1 or args.kv_space_gib <= 0:
        raise InputError("--window >= 16, --tokens >= 2, --repeats >= 1 and --kv-space-gib > 0 are required")
    configs = by_name(args.configs)
    checkpoints = _parse_checkpoints(args.checkpoint)
    model_dir = Path(resolve(config.model, config.home))
    if not model_dir.is_dir():
        raise InputError(f"bench quant needs a local model folder; {config.model} is not one")
    err = Console(stderr=True)
    say = lambda line: err.print(line, highlight=False)  # noqa: E731

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    text = bundled_text()
    token_ids = tokenizer.encode(text, add_special_tokens=False)
    if args.ppl_tokens:
        token_ids = token_ids[: args.ppl_tokens]
    items = bundled_mc_items()[: args.mc_items or None]
    say(f"bench quant: {len(configs)} configs, {len(token_ids)} text tokens, {len(items)} MC items")
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "bench": "quant",
        "model": str(config.model),
        "baseline": BASELINE,
        "kv_space_gib": args.kv_space_gib,
        "perplexity_method": (
            f"engine prompt_logprobs over non-overlapping {args.window}-token windows "
            "(the engine's own quantized kernels; about 3.5 s per window on 2 CPU cores in float32)"
        ),
        "mc_method": "sum of choice-token logprobs given 'Question: ...\\nAnswer:' (accuracy_norm divides by choice tokens)",
        "text_tokens": len(token_ids),
        "configs": [],
        "fake_quant": [],
        "machine": machine_info(),
        "config": {**{k: str(v) for k, v in vars(config).items()}, **{k: str(v) for k, v in vars(args).items() if k != "handler"}},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = Path(args.out)
    try:
        report["configs"] = await run_engine_configs(configs, model_dir, checkpoints, token_ids, items, args, config.home, say)
        if not args.no_fake_quant:
            say("fake-quant study (torch, round-to-nearest)...")
            try:
                limit = args.fake_quant_tokens or args.ppl_tokens or None
                report["fake_quant"], report["fake_quant_ordering"] = await asyncio.to_thread(
                    run_fake_quant, model_dir, text, limit, args.window
                )
            except ImportError as exc:
                report["fake_quant_skipped"] = f"fake-quant study unavailable: {exc}"
    finally:
        report["wall_s"] = time.perf_counter() - t0
        out.mkdir(parents=True, exist_ok=True)
        try:
            report["plots"] = plot(report, out)
        except Exception as exc:  # a plot must never cost the figures
            report["plots"] = []
            log.warning("plots not written: %s", exc)
        write_report(out, report)  # partial results are kept when interrupted
    if args.json:
        emit_json(report)
        return 0
    print_tables(report, Console())
    Console().print(f"report: {out / 'report.json'}")
    return 0


def print_tables(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    def num(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    table = Table(title=f"quantization: {report['model']} (KV budget {report['kv_space_gib']:g} GiB)")
    for col in ("config", "weights", "KV", "ppl", "Δppl %", "MC acc", "KV tokens", "decode tok/s", "16-way tok/s", "load s", "status"):
        table.add_column(col, justify="right" if col not in ("config", "weights", "KV", "status") else "left")
    for r in report["configs"]:
        table.add_row(
            r["name"], r["weights"], r["kv"], num(r["perplexity"], ".3f"), num(r["ppl_delta_pct"], "+.2f"),
            num(r["mc_accuracy"], ".3f"), num(r["kv_capacity_tokens"], "d"), num(r["decode_tok_s"], ".1f"),
            num(r["batch16_tok_s"], ".1f"), num(r["load_s"], ".1f"),
            r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}",
        )
    console.print(table)
    if report.get("fake_quant"):
        study = Table(title="torch fake-quant study (round-to-nearest)")
        for col in ("config", "tensor", "bits", "granularity", "ppl", "Δppl %"):
            study.add_column(col)
        for r in report["fake_quant"]:
            study.add_row(r["name"], str(r.get("tensor")), str(r.get("bits")), str(r.get("granularity")), num(r.get("perplexity"), ".3f"), num(r.get("ppl_delta_pct"), "+.2f"))
        console.print(study)
