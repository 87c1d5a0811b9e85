"""The runtime: the models, the in-flight limiter and the one call path, built once.

Why one object: everything that must be shared by every call of a process
(the engine, the cap on requests in flight, the context policy with its
retriever, compressor and cost model) hangs off one value that is built once
from the config (``vivace.assembly.open_runtime``) and closed once. Nothing
else keeps module-level state about models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vivace.config import Config
from vivace.runtime.backend import Backend
from vivace.runtime.call import CallPath
from vivace.runtime.limits import InFlightLimiter
from vivace.runtime.model_set import ModelSet
from vivace.runtime.tool_path import ToolPath
from vivace.runtime.tools import ToolBox

if TYPE_CHECKING:
    from vivace.runtime.checkpoints import RunStore


@dataclass
class Runtime:
    """``call`` is the call path; ``backend`` the default model behind the limiter; ``models`` every named one."""

    config: Config
    backend: Backend
    call: CallPath
    limiter: InFlightLimiter
    save_runs: bool = True  # benchmarks turn this off: their runs are not the user's history
    # The tools every run may name (code, plug-ins, MCP sets), and the one path their calls take.
    tools: ToolBox = field(default_factory=ToolBox)
    tool_path: ToolPath = field(init=False)
    _store: RunStore | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.tool_path = ToolPath(self.tools)

    def checkpoints(self) -> "RunStore | None":
        """The durable-run store (opened on first use), or None when runs are not saved or checkpoints are off."""
        if not (self.save_runs and self.config.checkpoints):
            return None
        if self._store is None:
            from vivace.runtime.checkpoints import RunStore

            self._store = RunStore.open(self.config.checkpoint_url, self.config.home, self.config.keep_runs)
        return self._store

    @property
    def policy(self) -> Any:
        return self.call.policy

    @property
    def models(self) -> ModelSet:
        """The named models (``default`` is ``backend``), all behind ``limiter``; closed with the runtime."""
        return self.call.models

    async def aclose(self) -> None:
        try:
            await self.tools.aclose()  # MCP servers stop with the runtime that started them
        finally:
            try:
                if self._store is not None:
                    store, self._store = self._store, None
                    await store.aclose()
            finally:
                await self.models.aclose()

    async def __aenter__(self) -> "Runtime":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
