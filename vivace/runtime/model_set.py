"""The runtime's named models: engines and endpoints held at once, each opened once, closed together.

Why its own object: a pipeline may send one step to a bf16 engine, another to
a W8A8 int8 engine and a third to a server; each must start once per process
(an engine costs seconds and memory), all must share the one in-flight
limiter, and all must close with the runtime. Models open on first use (or up
front through ``open``, before a run's clock starts); two tasks asking for the
same model at once wait for one start.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Awaitable, Callable, Iterable, Mapping

from vivace.errors import InputError
from vivace.runtime.backend import Backend
from vivace.trace import ModelInfo

log = logging.getLogger(__name__)

DEFAULT = "default"
Opener = Callable[[str], Awaitable[Backend]]


def _on_cpu() -> bool:
    """Whether vLLM runs on the CPU here (only asked once a second engine has started, so vLLM is loaded)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


class ModelSet:
    """Named backends; ``default`` is always there (the config's top-level model)."""

    def __init__(self, default: Backend, names: Iterable[str] = (), opener: Opener | None = None,
                 opened: Mapping[str, Backend] | None = None) -> None:
        self._open: dict[str, Backend] = {DEFAULT: default, **(opened or {})}
        self.names = list(dict.fromkeys([DEFAULT, *names, *self._open]))
        self._opener = opener
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    @property
    def default(self) -> Backend:
        return self._open[DEFAULT]

    @property
    def opened(self) -> dict[str, Backend]:
        """The models started so far, by name."""
        return dict(self._open)

    def check(self, name: str | None, where: str = "") -> str:
        """The name to use for ``name`` (None: default); an unknown one is an ``InputError`` listing the known."""
        chosen = name or DEFAULT
        if chosen not in self.names:
            prefix = f"{where}: " if where else ""
            raise InputError(f"{prefix}unknown model {chosen!r}; models: {', '.join(self.names)}")
        return chosen

    async def get(self, name: str | None) -> Backend:
        """The backend serving ``name``, started on first use."""
        chosen = self.check(name)
        if (found := self._open.get(chosen)) is not None:
            return found
        if self._closed:
            raise InputError(f"model {chosen!r}: the runtime is closed")
        if self._opener is None:
            raise InputError(f"model {chosen!r} is named but this runtime cannot open models")
        lock = self._locks.setdefault(chosen, asyncio.Lock())
        async with lock:
            if (found := self._open.get(chosen)) is None:
                log.debug("opening model %s", chosen)
                found = self._open[chosen] = await self._opener(chosen)
                self._warn_if_sharing_cores(chosen)
        return found

    def _warn_if_sharing_cores(self, name: str) -> None:
        """Two in-process engines on the CPU both bind every core: calls to both at once slow each other.

        Measured by ``bench pipeline`` (docs/benchmarks/pipeline.md): alone the
        second engine pays, but under load both ran twice as slow.
        """
        others = [n for n, b in self._open.items() if n != name and b.name == "vllm"]
        if self._open[name].name != "vllm" or not others or not _on_cpu():
            return
        log.warning("model %s is a second vLLM engine on the same %d CPU core(s) as %s: calls to both at once "
                    "slow each other; it pays when the other is idle, not under load", name, os.cpu_count() or 1,
                    ", ".join(others))

    async def open(self, names: Iterable[str]) -> None:
        """Start these models now, one after another (two engine starts at once would fight for the cores)."""
        for name in dict.fromkeys(names):
            await self.get(name)

    def describe(self, name: str) -> ModelInfo:
        """What serves ``name``, for run records: backend, served model, weights and their configuration."""
        backend = self._open.get(name)
        if backend is None:
            return {"name": name, "opened": False}
        out: ModelInfo = {"name": name, "backend": backend.name, "model": backend.model}
        options = getattr(backend, "options", None)  # an in-process engine: which weights, in which configuration
        if options is not None and hasattr(options, "quantization"):
            out.update({"weights": options.model, "dtype": getattr(backend, "dtype", options.dtype),
                        "quantization": getattr(backend, "quantization", options.quantization),
                        "kv_cache_dtype": options.kv_cache_dtype,
                        "compiled": not getattr(options, "enforce_eager", True)})
        urls = getattr(backend, "base_urls", None)
        if urls:
            out["base_urls"] = list(urls)
        return out

    async def aclose(self) -> None:
        """Close every opened model, the default last (its error is raised); one failing does not keep others open."""
        self._closed = True
        for name, backend in self._open.items():
            if name == DEFAULT:
                continue
            try:
                await backend.aclose()
            except Exception:  # closing the rest matters more than this one's error
                log.exception("closing model %s failed", name)
        await self._open[DEFAULT].aclose()
