"""vivace: efficiency-aware multi-agent orchestration over vLLM.

The public API, re-exported here and nowhere else (``from vivace import ...``)::

    import asyncio
    from vivace import Config, open_runtime, run

    async def main() -> None:
        async with await open_runtime(Config(backend="fake")) as runtime:
            trace = await run("research", "Compare trains and buses.", runtime)
            print(trace.answer, trace.latency_s)

    asyncio.run(main())

Layers (imports point down only, function-level imports included; a test checks it)::

    cli, __main__               parse arguments, dispatch to one command module
    commands                    one module per command; shared CLI I/O in commands/_io.py
    tui, eval, serve            the terminal UI; benchmarks and reports; the HTTP server
    agents                      the run driver, the SoT controller (an agent), pipelines, registry
    assembly                    builds the Runtime from the Config, plugs the context policy in
    retrieval                   the store, and the per-call context policy (retrieve, compress if it pays)
    compression                 compressors, budget, cost model (takes an embedder protocol)
    runtime                     backends, limiter, the one call path (CallPath), prompts, Runtime
    trace, config, errors       records, the typed config, the error taxonomy

Names are imported on first use, so ``import vivace`` (and ``vivace --help``)
does not pay for torch, vLLM, ChromaDB or LangGraph.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("vivace")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

_EXPORTS = {
    # agents and the run driver
    "Agent": "vivace.agents.base",
    "AgentContext": "vivace.agents.base",
    "StepInput": "vivace.agents.base",
    "NodeResult": "vivace.agents.base",
    "RunOptions": "vivace.agents.options",
    "Sampling": "vivace.agents.sampling",
    "Node": "vivace.agents.base",
    "task_text": "vivace.agents.base",
    "agent": "vivace.agents.registry",
    "Pipeline": "vivace.agents.pipeline.spec",
    "Step": "vivace.agents.pipeline.spec",
    "Loop": "vivace.agents.pipeline.spec",
    "run": "vivace.agents.driver",
    "ask": "vivace.agents.driver",
    "run_record": "vivace.agents.driver",
    "resume": "vivace.agents.resume",
    "Approval": "vivace.agents.journal",
    "events": "vivace.agents.events",
    # the runtime
    "Runtime": "vivace.runtime.runtime",
    "open_runtime": "vivace.assembly",
    "runtime_for": "vivace.assembly",
    "Call": "vivace.runtime.call",
    "CallPath": "vivace.runtime.call",
    "ContextPolicy": "vivace.runtime.call",
    "FakeBackend": "vivace.runtime.fake",
    # tools and structured output
    "tool": "vivace.runtime.tools",
    "Tool": "vivace.runtime.tools",
    "ToolCall": "vivace.runtime.tool_path",
    "ToolOutcome": "vivace.runtime.tool_path",
    "OutputSpec": "vivace.runtime.output",
    # records, config, errors
    "CallTrace": "vivace.trace",
    "RunTrace": "vivace.trace",
    "ToolTrace": "vivace.trace",
    "Config": "vivace.config",
    "load_config": "vivace.config",
    "VivaceError": "vivace.errors",
    "InputError": "vivace.errors",
    "RunError": "vivace.errors",
    "BackendError": "vivace.errors",
    "BusyError": "vivace.errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from vivace.agents import events
    from vivace.agents.base import Agent, AgentContext, Node, NodeResult, StepInput, task_text
    from vivace.agents.driver import ask, run, run_record
    from vivace.agents.options import RunOptions
    from vivace.agents.sampling import Sampling
    from vivace.agents.resume import resume
    from vivace.agents.journal import Approval
    from vivace.agents.pipeline.spec import Loop, Pipeline, Step
    from vivace.agents.registry import agent
    from vivace.assembly import open_runtime, runtime_for
    from vivace.config import Config, load_config
    from vivace.errors import BackendError, BusyError, InputError, RunError, VivaceError
    from vivace.runtime.call import Call, CallPath, ContextPolicy
    from vivace.runtime.fake import FakeBackend
    from vivace.runtime.output import OutputSpec
    from vivace.runtime.tool_path import ToolCall, ToolOutcome
    from vivace.runtime.tools import Tool, tool
    from vivace.runtime.runtime import Runtime
    from vivace.trace import CallTrace, RunTrace, ToolTrace


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vivace' has no attribute {name!r}")
    value = import_module(module) if name == "events" else getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
