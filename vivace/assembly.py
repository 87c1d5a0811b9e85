"""Builds the runtime from the config and plugs the context policy into the call path.

Why a layer of its own: the runtime (backends, limiter, call path) knows
nothing of retrieval or compression, and those know nothing of engines; this
is the one place that knows both, so every entry point (CLI, TUI, server,
library, benches) gets the same stack.
"""

from __future__ import annotations

from vivace.config import Config
from vivace.retrieval.policy import RetrievalCompression
from vivace.runtime import open_backend
from vivace.runtime.backend import Backend
from vivace.runtime.call import CallPath, ContextPolicy, Defaults
from vivace.runtime.limits import InFlightLimiter, LimitedBackend
from vivace.runtime.runtime import Runtime

__all__ = ["open_runtime", "runtime_for"]


def runtime_for(
    config: Config,
    backend: Backend,
    *,
    limiter: InFlightLimiter | None = None,
    policy: ContextPolicy | None = None,
    save_runs: bool = True,
) -> Runtime:
    """A runtime around an already open ``backend`` (tests, benches, embedding apps)."""
    if isinstance(backend, LimitedBackend):
        limiter = backend.limiter
    else:
        limiter = limiter or InFlightLimiter(config.max_in_flight)
        backend = LimitedBackend(backend, limiter)
    defaults = Defaults(config.max_tokens, config.temperature, config.repetition_penalty, config.scheduling)
    call = CallPath(backend, policy or RetrievalCompression(config), defaults)
    return Runtime(config, backend, call, limiter, save_runs)


async def open_runtime(config: Config, *, limiter: InFlightLimiter | None = None, save_runs: bool = True) -> Runtime:
    """Start the configured backend (an engine, servers, or the fake) and build the runtime around it."""
    limiter = limiter or InFlightLimiter(config.max_in_flight)
    backend = await open_backend(config, limiter)
    return runtime_for(config, backend, save_runs=save_runs)
