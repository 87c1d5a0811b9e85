"""`vivace bench context`: long-context QA by stuffing, RAG, and each with compression.

The measuring (and the report.json) is ``vivace_bench.context_bench.run_bench``; this module
parses and prints. Its ``--compression`` is the mode of the *_compress methods.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from vivace.choices import Compression
from vivace.commands._io import Parents, Subparsers
from vivace.config import Config
from vivace_bench.context_bench import METHODS, run_bench

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("context", parents=parents.calls_model(), help="long-context QA: stuffing vs RAG vs compression")
    p.add_argument("--corpus", metavar="DIR", help="text/markdown corpus (default: a synthetic fictional one)")
    p.add_argument("--questions", metavar="FILE.jsonl", help='lines of {"question": ..., "answer": ...}')
    p.add_argument("--out", default="runs/bench-context", metavar="DIR", help="where report.json goes")
    p.add_argument("--limit", type=int, default=12, help="questions to run (default 12)")
    p.add_argument("--answer-tokens", type=int, default=48, help="output cap per answer (default 48)")
    p.add_argument("--k", type=int, default=None, help="chunks retrieved (config retrieval_k)")
    p.add_argument("--compression", choices=(Compression.AUTO.value, Compression.ALWAYS.value), default="auto", help="mode of the *_compress methods")
    p.add_argument("--no-probe", action="store_true", help="skip the fine/coarse 2x gold-retention probe")
    p.add_argument("--repetition-penalty", type=float, default=None, help="for every method (config repetition_penalty)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="subset to run")
    p.set_defaults(handler=cmd_bench_context)


async def cmd_bench_context(args: argparse.Namespace, config: Config) -> int:
    t0 = time.perf_counter()
    report = await run_bench(config, args)
    if args.json:
        print(json.dumps({k: report[k] for k in ("methods", "n", "targets", "probe_2x")}))
        return 0
    print(f"{'method':<16}{'prompt tok':>11}{'TTFT s':>9}{'latency s':>11}{'overhead s':>12}{'accuracy':>10}{'gold kept':>11}")
    for name, m in report["methods"].items():
        print(
            f"{name:<16}{m['prompt_tokens_mean'] or 0:>11.0f}{m['ttft_median_s'] or 0:>9.3f}{m['latency_median_s'] or 0:>11.3f}"
            f"{m['overhead_median_s'] or 0:>12.3f}{m['accuracy'] or 0:>10.2f}{m['gold_kept_rate'] or 0:>11.2f}"
        )
    print(json.dumps(report["targets"]))
    if report["probe_2x"]:
        print("2x probe:", json.dumps(report["probe_2x"]))
    print(f"report: {Path(args.out) / 'report.json'} ({time.perf_counter() - t0:.0f} s)")
    return 0
