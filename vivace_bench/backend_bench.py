"""`vivace bench backend`: single-stream decode speed and batched throughput.

Every level sends the same prompt with ``ignore_eos`` so that each request
produces exactly ``--tokens`` tokens; figures are medians over ``--repeats``
rounds, all on one engine in one process. Timings come from the traces
(GenerationResult), never from a second clock.
"""

from __future__ import annotations

import asyncio
import platform
import statistics
import time
from typing import Any


PROMPT = "Write a detailed essay about the history of the bicycle."
DEFAULT_LEVELS = (1, 4, 8, 16)


async def measure_level(backend: Any, concurrency: int, tokens: int) -> dict[str, float]:
    """One round: ``concurrency`` identical-length requests at once."""
    from vivace.runtime import Call, complete

    def request(i: int) -> Call:
        return Call(
            messages=[{"role": "user", "content": f"{PROMPT} (variant {i})"}],
            max_tokens=tokens,
            ignore_eos=True,
            tag=f"bench-c{concurrency}",
        )

    results = await asyncio.gather(*(complete(backend, request(i)) for i in range(concurrency)))
    start = min(r.started_at for r in results)
    end = max(r.ended_at for r in results)
    wall = end - start
    out = sum(r.output_tokens for r in results)
    return {
        "wall_s": wall,
        "output_tokens": out,
        "tok_s": out / wall if wall > 0 else 0.0,
        "ttft_median_s": statistics.median(r.ttft_s for r in results),
        "per_stream_decode_tok_s": statistics.median(r.decode_tok_s for r in results),
    }


async def run_bench(backend: Any, levels: list[int], tokens: int, repeats: int, progress: Any = None) -> dict[str, Any]:
    await measure_level(backend, 1, 8)  # warm-up, not reported
    rows: list[dict[str, Any]] = []
    for level in levels:
        rounds = []
        for _ in range(repeats):
            rounds.append(await measure_level(backend, level, tokens))
            if progress:
                progress(level, rounds[-1])
        rows.append({
            "concurrency": level,
            "repeats": repeats,
            "tokens_per_request": tokens,
            **{key: statistics.median(r[key] for r in rounds) for key in rounds[0]},
            "tok_s_min": min(r["tok_s"] for r in rounds),
            "tok_s_max": max(r["tok_s"] for r in rounds),
        })
    base = next((r for r in rows if r["concurrency"] == 1), None)
    for row in rows:
        row["speedup_vs_1"] = row["tok_s"] / base["tok_s"] if base and base["tok_s"] else None
    return {
        "bench": "backend",
        "backend": backend.name,
        "model": backend.model,
        "load_s": getattr(backend, "load_s", None),
        "single_stream_decode_tok_s": base["per_stream_decode_tok_s"] if base else None,
        "levels": rows,
        "machine": machine_info(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def machine_info() -> dict[str, Any]:
    import os

    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(), "cpu": cpu}
