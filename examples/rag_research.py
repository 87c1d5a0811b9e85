"""Ingest a folder of notes, then run the research pipeline with retrieval before every call.

    python examples/rag_research.py NOTES_DIR "What do the notes say about pricing?"

Every call (planner, each researcher, writer, critic) retrieves with its own
query and is offered compression when the measured cost model says it pays;
the decision of each call is printed from its trace.
"""

from __future__ import annotations

import asyncio
import sys

from vivace import load_config, open_runtime, run
from vivace.retrieval import Store


async def main(folder: str, task: str, collection: str = "example-notes") -> None:
    config = load_config()
    report = Store(config).ingest([folder], collection)
    print(f"{collection}: {report.chunks} chunks from {report.files} file(s)")
    async with await open_runtime(config) as runtime:
        trace = await run("research", task, runtime, collection=collection, options={"max_branches": 3})
    print(trace.answer)
    for call in trace.calls:
        ctx = call.extra["context"]
        print(f"  {call.agent:<10} {call.branch!s:<4} retrieved {ctx['retrieved']} · "
              f"compression {ctx.get('compression')}: {ctx.get('reason', '')}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: rag_research.py NOTES_DIR TASK")
    asyncio.run(main(sys.argv[1], " ".join(sys.argv[2:])))
