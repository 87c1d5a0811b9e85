"""One task as the TUI runs it: optional retrieval and compression, then the chosen agent."""

from __future__ import annotations

from typing import Any, Callable

from vivace.config import Config


async def run_task(
    backend: Any,
    config: Config,
    question: str,
    *,
    agent: str = "answer",
    mode: str = "auto",
    rag: str | None = None,
    compression: str = "auto",
    on_event: Callable[[Any], None] | None = None,
) -> Any:
    """The run's trace. ``answer`` is the SoT controller in ``mode``; any other name is a registered agent."""
    from vivace.agents import answer_question

    config = config.replace(compression=compression, mode=mode)
    if agent != "answer":
        from vivace.agents.runner import run_agent

        return await run_agent(agent, question, backend=backend, config=config, on_event=on_event, collection=rag)
    context, stats = None, None
    if rag:
        from vivace.retrieval.rag import retrieve_context

        context, stats = await retrieve_context(question, config, backend, rag)
    return await answer_question(
        question, backend, mode=mode, max_tokens=config.max_tokens, temperature=config.temperature,
        repetition_penalty=config.repetition_penalty, max_points=config.sot_max_points, on_event=on_event,
        context=context, context_stats=stats,
    )
