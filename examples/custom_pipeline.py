"""Your own agents and pipeline in code: two reviewers in parallel, then an editor, with a bounded loop.

    python examples/custom_pipeline.py "Explain why the sky is blue."

Agents are ``async def fn(inp, ctx)`` registered with ``@agent``; each model
call is ``ctx.call``, which goes through vivace's one call path (context
decision, in-flight cap, trace). Steps with no edge between them run at once.
"""

from __future__ import annotations

import asyncio
import sys

from vivace import AgentContext, Loop, NodeResult, Pipeline, Step, StepInput, agent, load_config, open_runtime, run


@agent("drafter", description="Writes a short first answer.")
async def drafter(inp: StepInput, ctx: AgentContext) -> str:
    result = await ctx.call([{"role": "user", "content": f"Answer in three sentences: {inp['task']}"}], max_tokens=96)
    return result.text.strip()


@agent("checker", description="Says what the draft gets wrong or leaves out.", needs_input=True)
async def checker(inp: StepInput, ctx: AgentContext) -> dict[str, str]:
    prompt = f"Task: {inp['task']}\n\nDraft:\n{inp['history']}\n\nReply OK if the draft is right, else FIX: and what to fix."
    result = await ctx.call([{"role": "user", "content": prompt}], max_tokens=48)
    text = result.text.strip()
    return NodeResult(text, decision="ok" if text.upper().startswith("OK") else "fix")


PIPELINE = Pipeline(
    "draft-and-check",
    [Step("draft", "drafter"), Step("check", "checker")],
    edges=[("draft", "check")],
    loops=[Loop("check", "draft", when="fix", max_rounds=1)],
    output="draft",
)


async def main(task: str) -> None:
    async with await open_runtime(load_config()) as runtime:
        trace = await run(PIPELINE, task, runtime)
    print(trace.answer)
    for summary in trace.agents:
        print(f"  {summary['name']:<8} {summary['calls']} call(s) {summary['output_tokens']:4d} tokens out")
    print(f"latency {trace.latency_s:.2f} s · parallelism {trace.parallelism:.2f}x · status {trace.status}")


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "Explain why the sky is blue."))
