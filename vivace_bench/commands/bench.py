"""`vivace bench BENCH`: the benchmark group; each bench writes report.json under --out.

Why a module per bench: each one's CLI code (flags, engine start, progress,
tables) is a screenful, and together they would pass the size a reader can
hold. The measuring itself stays in ``vivace_bench``, as functions that return
dicts.
"""

from __future__ import annotations

import logging

from vivace_bench.commands import (
    bench_backend,
    bench_context,
    bench_faults,
    bench_fleet,
    bench_load,
    bench_overhead,
    bench_pipeline,
    bench_quant,
    bench_router,
    bench_safety,
    bench_sot,
    bench_tools,
)
from vivace.commands._io import Parents, Subparsers

log = logging.getLogger(__name__)

# In `vivace bench --help` order.
BENCHES = (bench_backend, bench_sot, bench_overhead, bench_context, bench_quant, bench_load, bench_pipeline, bench_fleet,
           bench_router, bench_safety, bench_tools, bench_faults)


def register(sub: Subparsers, parents: Parents) -> None:
    bench = sub.add_parser("bench", help="benchmarks that write report.json")
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    for module in BENCHES:
        module.register(bsub, parents)
