"""The durable-run figures of `vivace bench overhead` (checkpoint cost per step, database size): schema and counts.

No timed assertions: the figures are the bench's to report, on the machine that runs it.
"""

from __future__ import annotations

import asyncio

from vivace_bench.durable_bench import checkpoint_overhead, database_size


def test_checkpoint_overhead_pairs_runs_with_and_without_checkpoints() -> None:
    report = asyncio.run(checkpoint_overhead(branches=3, repeats=3, warmup=1))
    assert report["steps_per_run"] == 6  # plan, 3 researchers, write, review: each saved once
    assert report["run_ms_with"] > 0 and report["run_ms_without"] > 0
    assert report["save_ms_per_step"] > 0  # the saves' own time, measured inside the runs
    assert isinstance(report["ok"], bool) and report["target_per_step_ms"] == 1.0


def test_database_size_keeps_only_keep_runs_runs() -> None:
    seen: list[int] = []
    report = asyncio.run(database_size(runs=9, every=3, keep_runs=4, progress=lambda i, b: seen.append(i)))
    assert seen == [3, 6, 9]
    assert [p["kept"] for p in report["series"]] == [3, 4, 4]  # pruned to keep_runs once past it
    assert all(p["bytes"] > 0 for p in report["series"]) and report["keep_runs"] == 4
