"""`vivace bench quant`: what each quantization costs in quality and buys in memory and speed.

Every configuration starts its own engine with its own dtype, quantization and KV-cache
dtype, so the engine flags do not apply; ``--backend`` (must be vllm) and ``--model`` do.
The measuring is ``vivace.eval.quant_bench``; this module parses, assembles the report and prints.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config
from vivace.eval import write_report
from vivace.eval.quant_bench import plot, run_engine_configs, run_fake_quant
from vivace.eval.quant_configs import BASELINE, by_name

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("quant", parents=[parents.common, parents.json, parents.model], help="perplexity, MC accuracy, KV capacity and speed per quantization")
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


async def cmd_bench_quant(args: argparse.Namespace, config: Config) -> int:
    import asyncio

    from rich.console import Console

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
