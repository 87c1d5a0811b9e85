"""`vivace bench quant`: what each quantization costs in quality and buys in memory and speed.

Every configuration starts its own engine with its own dtype, quantization and KV-cache
dtype, so the engine flags do not apply; ``--backend`` (must be vllm) and ``--model`` do.
The measuring is ``vivace_bench.quant_bench``; this module parses, assembles the report and prints.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config
from vivace_bench import write_report
from vivace_bench.quant_bench import engine_vs_emulation, plot, run_engine_configs, run_fake_quant
from vivace_bench.quant_configs import BASELINE, by_name

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("quant", parents=[parents.common, parents.json, parents.model], help="perplexity, MC accuracy, KV capacity and speed per quantization")
    p.add_argument("--out", default="runs/bench-quant", metavar="DIR", help="where report.json and plots go")
    p.add_argument("--configs", nargs="+", metavar="NAME", help="configs to run (default: all; bf16 is always added); any as NAME+compiled too")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH", help="checkpoint for awq/gptq (GPU)")
    p.add_argument("--ppl-tokens", type=int, default=0, help="score only the first N tokens of the text (default: all)")
    p.add_argument("--window", type=int, default=1024, help="perplexity window in tokens (default 1024)")
    p.add_argument("--mc-items", type=int, default=0, help="score only the first N multiple-choice items (default: all)")
    p.add_argument("--kv-space-gib", type=float, default=1.0, help="the fixed KV-cache budget every config gets")
    p.add_argument("--tokens", type=int, default=128, help="output tokens per request in the speed runs")
    p.add_argument("--repeats", type=int, default=2, help="speed rounds per config; medians are reported")
    p.add_argument("--fake-quant-tokens", type=int, default=0, help="tokens for the torch study (default: all)")
    p.add_argument("--no-fake-quant", action="store_true", help="skip the torch fake-quant study")
    p.add_argument("--study", nargs="+", metavar="ROW", help="rows of the torch study to run (default: all; fp32 is always added)")
    p.add_argument("--agents-context", type=int, default=4096, help="per-task window of the long-context row, tokens (default 4096)")
    p.add_argument("--agents", action="store_true", help="also run the long-context round: as many such tasks at once as the KV budget holds")
    p.add_argument("--max-ppl-pct", type=float, default=1.0, help="quality bound of the per-machine choice: perplexity loss, %% (default 1)")
    p.add_argument("--max-mc-points", type=float, default=1.0, help="quality bound: multiple-choice accuracy loss, points (default 1)")
    p.add_argument("--explain", action="store_true", help="print this machine's choice from the last run, start no engine")
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
    from vivace_bench.backend_bench import machine_info
    from vivace_bench.scoring import bundled_mc_items, bundled_text
    from vivace.runtime.models import resolve

    if args.max_ppl_pct < 0 or args.max_mc_points < 0:
        raise InputError("--max-ppl-pct and --max-mc-points must be >= 0")
    if args.explain:
        return explain(args, config)
    if config.backend != "vllm":
        raise InputError("bench quant starts its own engines: it needs --backend vllm")
    if args.window < 16 or args.tokens < 2 or args.repeats < 1 or args.kv_space_gib <= 0 or args.agents_context <= args.tokens + 80:
        raise InputError("--window >= 16, --tokens >= 2, --repeats >= 1, --kv-space-gib > 0 and --agents-context > --tokens + 80 are required")
    configs = by_name(args.configs)
    from vivace_bench.fake_quant import STUDY

    unknown = sorted(set(args.study or []) - {c.name for c in STUDY})
    if unknown:
        raise InputError(f"unknown study row(s) {', '.join(unknown)}; known: {', '.join(c.name for c in STUDY)}")
    checkpoints = _parse_checkpoints(args.checkpoint)
    model_dir = Path(resolve(config.model, config.home))
    if not model_dir.is_dir():
        raise InputError(f"bench quant needs a local model folder; {config.model} is not one")
    err = Console(stderr=True)

    def say(line: str) -> None:
        err.print(line, highlight=False)

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
                    run_fake_quant, model_dir, text, limit, args.window, config.home, args.study
                )
            except ImportError as exc:
                report["fake_quant_skipped"] = f"fake-quant study unavailable: {exc}"
            report["engine_vs_emulation"] = engine_vs_emulation(report["configs"], report["fake_quant"])
    finally:
        report["wall_s"] = time.perf_counter() - t0
        out.mkdir(parents=True, exist_ok=True)
        try:
            report["plots"] = plot(report, out)
        except Exception as exc:  # a plot must never cost the figures
            report["plots"] = []
            log.warning("plots not written: %s", exc)
        write_report(out, report)  # partial results are kept when interrupted
    _record_choice(report, args, config, out)
    if args.json:
        emit_json(report)
        return 0
    console = Console()
    print_tables(report, console)
    from rich.text import Text

    if report.get("choice"):
        console.print(Text(f"choice for this machine: {report['choice']['reason']}"), width=min(console.width, 80))
    console.print(f"report: {out / 'report.json'}")
    return 0


def _record_choice(report: dict[str, Any], args: argparse.Namespace, config: Config, out: Path) -> None:
    """The per-machine choice this run supports, into the report and the per-CPU cache."""
    from vivace.runtime import quant_choice

    try:
        report["choice"] = quant_choice.choose(report["configs"], args.max_ppl_pct, args.max_mc_points)
    except ValueError as exc:
        report["choice_skipped"] = str(exc)
        return
    report["command"] = "vivace " + " ".join(sys.argv[1:])
    path = quant_choice.save(config.home, report)
    report["choice"]["cache"] = str(path) if path else None
    write_report(out, report)


def explain(args: argparse.Namespace, config: Config) -> int:
    """``--explain``: the choice for this CPU and model from the cached run, and why each row lost."""
    from rich.console import Console
    from rich.text import Text

    from vivace.errors import VivaceError
    from vivace.runtime import quant_choice

    cached = quant_choice.load(config.home, str(config.model))
    if cached is None:
        raise VivaceError(f"no bench quant result for this CPU and {config.model} yet; run vivace bench quant first")
    result = quant_choice.choose(cached["rows"], args.max_ppl_pct, args.max_mc_points)
    result["machine"], result["measured_at"] = cached["machine"], cached["measured_at"]
    if args.json:
        emit_json(result)
        return 0
    console = Console()
    console.print(Text(f"{cached['machine']['cpu']} ({', '.join(cached['machine']['flags'])}), measured {cached['measured_at']}"), width=min(console.width, 80))
    table = _table("per-machine choice", [("config", False), ("16-way ×", True), ("Δppl %", True), ("MC pts", True), ("verdict", False)])
    for v in result["candidates"]:
        table.add_row(v["name"], _num(v.get("speedup"), ".2f"), _num(v.get("ppl_delta_pct"), "+.2f"),
                      _num(0.0 - v["mc_drop_points"] + 0.0 if "mc_drop_points" in v else None, "+.1f"), "chosen" if v["name"] == result["choice"] else ("in bound" if v["inside"] else "out"))
    console.print(table)
    for v in result["candidates"]:
        if not v["inside"]:
            console.print(Text(f"{v['name']}: {v['why']}"), width=min(console.width, 80))
    console.print(Text(result["reason"]), width=min(console.width, 80))
    return 0


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _table(title: str, columns: list[tuple[str, bool]]) -> Any:
    """A borderless table whose numbers are never cut: a narrow console wraps the name column instead."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, title_justify="left")
    for i, (name, numeric) in enumerate(columns):
        table.add_column(name, justify="right" if numeric else "left", no_wrap=i > 0, overflow="fold" if i == 0 else "ellipsis")
    return table


LEGEND = (
    "ppl: engine perplexity; Δ%: against bf16; MC: multiple-choice accuracy; KV tok: tokens the fixed KV "
    "budget holds (×: against bf16); tok/s: single-stream decode; 16-way: 16 concurrent streams, total."
)


def print_tables(report: dict[str, Any], console: Any) -> None:
    """The engine rows, the engine-vs-emulation comparison and the torch study, each within 80 columns."""
    from rich.text import Text

    table = _table(
        f"quantization: {Path(report['model']).name}, KV budget {report['kv_space_gib']:g} GiB",
        [("config", False), ("ppl", True), ("Δ%", True), ("MC", True), ("KV tok", True), ("×", True), ("tok/s", True), ("16-way", True)],
    )
    notes = []
    for r in report["configs"]:
        name = r["name"] if r["status"] == "ok" else f"{r['name']} ({r['status']})"
        table.add_row(
            name, _num(r["perplexity"], ".3f"), _num(r["ppl_delta_pct"], "+.2f"), _num(r["mc_accuracy"], ".3f"),
            _num(r["kv_capacity_tokens"], "d"), _num(r["kv_capacity_vs_baseline"], ".2f"),
            _num(r["decode_tok_s"], ".1f"), _num(r["batch16_tok_s"], ".1f"),
        )
        if r["status"] != "ok":
            notes.append(f"{r['name']}: {r['status']}: {r['reason']}")
    console.print(table)
    console.print(Text(LEGEND, style="dim"), width=min(console.width, 80))
    for note in notes:
        console.print(Text(note), width=min(console.width, 80))
    ran = [r for r in report["configs"] if r.get("agents") is not None]
    if ran:
        context = ran[0].get("agents_context")
        longc = _table(f"long context, {context}-token tasks", [("config", False), ("tasks", True), ("×", True), ("tok/s", True)])
        base = next((r["agents"] for r in ran if r["name"] == report.get("baseline", "bf16")), None)
        for r in ran:
            longc.add_row(r["name"], str(r["agents"]), _num(r["agents"] / base if base else None, ".2f"), _num(r.get("agents_tok_s"), ".1f"))
        console.print(longc)
        console.print(Text("tasks: how many the KV budget holds at once; ×: against bf16; tok/s: their decoding, total",
                           style="dim"), width=min(console.width, 80))
    if report.get("engine_vs_emulation"):
        cmp = _table("engine vs emulation (Δ perplexity %)", [("config", False), ("engine", True), ("emulated", True), ("old emul.", True)])
        for r in report["engine_vs_emulation"]:
            cmp.add_row(r["config"], _num(r["engine_pct"], "+.2f"), _num(r["emulated_pct"], "+.2f"), _num(r.get("old_emulation_pct"), "+.2f"))
        console.print(cmp)
        console.print(Text(
            "emulated: torch fp32 replay of what vLLM does (post-RoPE keys, truncating fp8 cast, the "
            "checkpoint's scales), against fp32; old emul.: round-to-nearest at k/v_proj, scale 1.",
            style="dim"), width=min(console.width, 80))
    if report.get("fake_quant"):
        study = _table("torch fake-quant study (Qllm-Eval sweep + engine replays)", [("config", False), ("granularity", False), ("ppl", True), ("Δ%", True)])
        for r in report["fake_quant"]:
            study.add_row(r["name"], str(r.get("granularity") or "-"), _num(r.get("perplexity"), ".3f"), _num(r.get("ppl_delta_pct"), "+.2f"))
        console.print(study)
