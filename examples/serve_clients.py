"""N concurrent OpenAI-SDK clients against `vivace serve`: what each waited, and what the server did.

    vivace serve &                      # prints: serving on http://127.0.0.1:8000/v1 ...
    python examples/serve_clients.py --base-url http://127.0.0.1:8000/v1 --model vivace-normal --clients 32

Prints one JSON object: wall seconds, p50/p95 client latency, output tokens
per second over the wall, and the server's own run records for the same runs
(read back from /v1/runs/{id}).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx
from openai import AsyncOpenAI

QUESTIONS = [
    "What are the main benefits of regular exercise?",
    "How do vaccines train the immune system?",
    "Why do leaves change colour in autumn?",
    "What makes a good night's sleep?",
]


async def one(client: AsyncOpenAI, model: str, i: int, max_tokens: int) -> tuple[float, str, int]:
    t0 = time.perf_counter()
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], max_tokens=max_tokens)
    done = raw.parse()
    return time.perf_counter() - t0, raw.headers["x-vivace-run-id"], done.usage.completion_tokens if done.usage else 0


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--model", default="vivace-normal")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--api-key", default="unused")
    args = ap.parse_args()
    async with AsyncOpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=900) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(client, args.model, i, args.max_tokens) for i in range(args.clients)))
        wall = time.perf_counter() - t0
    latencies = sorted(r[0] for r in results)
    server = args.base_url.rstrip("/")
    records = [httpx.get(f"{server}/runs/{run_id}", headers={"authorization": f"Bearer {args.api_key}"}).json()
               for _, run_id, _ in results]
    tokens = sum(r[2] for r in results)
    print(json.dumps({
        "model": args.model, "clients": args.clients, "max_tokens": args.max_tokens,
        "wall_s": round(wall, 3),
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3),
        "output_tokens": tokens, "tok_s": round(tokens / wall, 1) if wall else 0.0,
        "runs_done": sum(1 for r in records if r.get("status") == "done"),
        "server_latency_p50_s": round(statistics.median(r["latency_s"] for r in records), 3),
        "server_queue_s_max": round(max((c["queue_s"] for r in records for c in r["calls"]), default=0.0), 3),
    }))


if __name__ == "__main__":
    asyncio.run(main())
