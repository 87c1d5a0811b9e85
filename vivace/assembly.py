"""Builds the runtime from the config and plugs the context policy into the call path.

Why a layer of its own: the runtime (backends, limiter, call path) knows
nothing of retrieval or compression, and those know nothing of engines; this
is the one place that knows both, so every entry point (CLI, TUI, server,
library, benches) gets the same stack.
"""

from __future__ import annotations

from typing import Mapping

from vivace.config import Config
from vivace.retrieval.policy import RetrievalCompression
from vivace.runtime import open_backend
from vivace.runtime.backend import Backend
from vivace.runtime.call import CallPath, ContextPolicy, Defaults
from vivace.runtime.limits import InFlightLimiter, LimitedBackend
from vivace.runtime.mcp import open_mcp
from vivace.runtime.model_set import ModelSet
from vivace.runtime.runtime import Runtime
from vivace.runtime.tools import ToolBox

__all__ = ["open_runtime", "runtime_for"]


def runtime_for(
    config: Config,
    backend: Backend,
    *,
    limiter: InFlightLimiter | None = None,
    policy: ContextPolicy | None = None,
    save_runs: bool = True,
    models: Mapping[str, Backend] | None = None,
    tools: ToolBox | None = None,
) -> Runtime:
    """A runtime around an already open ``backend`` (tests, benches, embedding apps).

    ``models`` are other already open backends by name; the config's named
    models not among them open on first use. All share one in-flight limiter.
    ``tools`` is the runtime's ToolBox (``open_runtime`` passes one with the
    config's MCP servers started); the runtime closes it.
    """
    if isinstance(backend, LimitedBackend):
        limiter = backend.limiter
    else:
        limiter = limiter or InFlightLimiter(config.max_in_flight)
        backend = LimitedBackend(backend, limiter)
    shared = limiter
    opened = {name: b if isinstance(b, LimitedBackend) else LimitedBackend(b, shared)
              for name, b in (models or {}).items()}

    async def opener(name: str) -> Backend:
        return await open_backend(config.for_model(name), shared)

    model_set = ModelSet(backend, config.model_names, opener, opened)
    defaults = Defaults(config.max_tokens, config.temperature, config.repetition_penalty, config.scheduling)
    call = CallPath(backend, policy or RetrievalCompression(config), defaults, model_set)
    return Runtime(config, backend, call, limiter, save_runs, tools=tools if tools is not None else ToolBox())


async def open_runtime(config: Config, *, limiter: InFlightLimiter | None = None, save_runs: bool = True) -> Runtime:
    """Start the config's MCP servers, then the default model (an engine, servers, or the fake), and build
    the runtime around them.

    MCP servers start first: one that fails is one line before any engine
    starts, and if the engine then fails they are closed again. The config's
    named models (``[models.NAME]``) start on first use, or up front with ``runtime.models.open``.
    """
    tools = ToolBox()
    await open_mcp(config, tools)
    try:
        limiter = limiter or InFlightLimiter(config.max_in_flight)
        backend = await open_backend(config, limiter)
    except BaseException:
        await tools.aclose()
        raise
    return runtime_for(config, backend, save_runs=save_runs, tools=tools)
