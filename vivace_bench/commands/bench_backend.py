"""`vivace bench backend`: decode tok/s and batched throughput at several concurrency levels.

The measuring is ``vivace_bench.backend_bench.run_bench``; this module parses, starts the
engine, and prints.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config
from vivace_bench import write_report
from vivace_bench.backend_bench import DEFAULT_LEVELS, run_bench

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("backend", parents=parents.calls_model(), help="decode tok/s and batched throughput at 1/4/8/16")
    p.add_argument("--concurrency", type=int, nargs="+", default=list(DEFAULT_LEVELS), metavar="C")
    p.add_argument("--tokens", type=int, default=128, help="output tokens per request (default 128)")
    p.add_argument("--repeats", type=int, default=3, help="rounds per level; medians are reported")
    p.add_argument("--out", default="runs/bench-backend", metavar="DIR", help="where report.json goes")
    p.set_defaults(handler=cmd_bench_backend)


async def cmd_bench_backend(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console
    from rich.table import Table

    from vivace.errors import InputError
    from vivace.runtime import open_backend

    if any(c < 1 for c in args.concurrency) or args.tokens < 2 or args.repeats < 1:
        raise InputError("--concurrency values and --repeats must be >= 1, --tokens >= 2")
    err = Console(stderr=True)
    # The limiter must not cap the levels being measured.
    config = config.replace(max_in_flight=max(config.max_in_flight, *args.concurrency))
    with err.status(f"starting the {config.backend} backend..."):
        backend = await open_backend(config)
    try:
        report = await run_bench(
            backend,
            args.concurrency,
            args.tokens,
            args.repeats,
            progress=lambda c, r: err.print(f"  c={c:<3} {r['tok_s']:7.1f} tok/s  wall {r['wall_s']:.2f} s", highlight=False),
        )
    finally:
        await backend.aclose()
    report["config"] = {k: str(v) for k, v in vars(config).items()}
    out = Path(args.out)
    write_report(out, report)
    if args.json:
        emit_json(report)
        return 0
    table = Table(title=f"backend bench: {report['backend']}:{report['model']} (medians of {args.repeats})")
    for col in ("concurrency", "tok/s", "min-max", "wall s", "TTFT s", "per-stream tok/s", "x vs 1"):
        table.add_column(col, justify="right")
    for row in report["levels"]:
        table.add_row(
            str(row["concurrency"]),
            f"{row['tok_s']:.1f}",
            f"{row['tok_s_min']:.0f}-{row['tok_s_max']:.0f}",
            f"{row['wall_s']:.2f}",
            f"{row['ttft_median_s']:.3f}",
            f"{row['per_stream_decode_tok_s']:.1f}",
            f"{row['speedup_vs_1']:.2f}" if row["speedup_vs_1"] else "-",
        )
    Console().print(table)
    Console().print(f"report: {out / 'report.json'}")
    return 0
