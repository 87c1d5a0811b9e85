"""vLLM's own router (PyPI ``vllm-router``) in front of several vLLM servers, started on loopback.

Why: past one machine, the model side scales through vLLM's router, not through
vivace (DESIGN: "vivace builds no distributed machinery of its own"). To
vivace the router is one more OpenAI-compatible endpoint: a ``[models.NAME]``
table with ``backend = "openai"`` and ``base_urls = [ROUTER_URL]`` uses it
through ``OpenAIBackend`` unchanged (vendor fields and cached-token counts
pass through). This module starts one for ``vivace bench fleet`` and the
tests, which compare its routing with the fleet's own prefix affinity:

- it listens on 127.0.0.1 only (its Prometheus port too), on free ports;
- it sits in a session of its own, so a terminal's Ctrl-C reaches only vivace,
  and the ``EngineGuard`` watchdog ends it if vivace is killed;
- ``aclose`` sends SIGTERM (the router shuts down gracefully), then SIGKILL.

Its ``cache_aware`` policy matches prompt *tokens*, which it asks each worker
for (``/v1/chat/completions/render``). vLLM serves that endpoint only when
started with ``--enable-scale-out``; without it the router counts
``missing_tokens`` and sends every request to the least-loaded worker, which
for sequential calls is always the same one. ``RoutedServerOptions`` starts
local servers with the flag; ``renders`` checks a user's own server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from vivace.errors import BackendError, InputError
from vivace.runtime.engine_guard import EngineGuard
from vivace.runtime.local_server import ServerOptions, free_port
from vivace.runtime.openai_http import server_root

log = logging.getLogger(__name__)

# The policies that need nothing beyond the worker URLs (kv_aware needs KV event sources, PD modes more servers).
POLICIES = ("cache_aware", "round_robin", "power_of_two", "random", "consistent_hash", "sticky_least_loaded")
INSTALL_HINT = "pip install vllm-router (vLLM's router, on PyPI)"

_COUNTER = re.compile(r'^(vllm_router_\w+)\{([^}]*)\}\s+(\S+)$', re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def router_binary(binary: str | None = None) -> str:
    """The ``vllm-router`` script: ``binary`` if given, else beside this interpreter (a venv not on PATH), else PATH."""
    if binary is not None:
        candidates = [binary]
    else:
        candidates = [str(Path(sys.executable).with_name("vllm-router")), shutil.which("vllm-router") or ""]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise BackendError(f"vllm-router is not installed ({binary or 'not beside ' + sys.executable + ' nor on PATH'}); "
                       f"{INSTALL_HINT}")


@dataclass(frozen=True)
class RoutedServerOptions(ServerOptions):
    """A local vLLM server that also serves ``/render``, the tokens the router's cache-aware policy matches on."""

    def command(self, port: int) -> list[str]:
        return [*super().command(port), "--enable-scale-out"]


async def renders(url: str, model: str | None = None) -> bool:
    """Whether the vLLM server at ``url`` renders chat prompts for the router (``--enable-scale-out``)."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], **({"model": model} if model else {})}
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            return (await client.post(f"{server_root(url)}/v1/chat/completions/render", json=body)).status_code == 200
    except httpx.HTTPError:
        return False


def parse_counters(text: str) -> dict[str, dict[str, float]]:
    """The router's per-worker request counts and its prefix-routing outcomes, from its Prometheus text."""
    out: dict[str, dict[str, float]] = {"per_worker": {}, "prefix_decisions": {}}
    for name, labels, value in _COUNTER.findall(text):
        tags = dict(_LABEL.findall(labels))
        if name == "vllm_router_processed_requests_total" and "worker" in tags:
            out["per_worker"][tags["worker"]] = float(value)
        elif name == "vllm_router_prefix_routing_decisions_total" and "outcome" in tags:
            key = tags["outcome"]
            out["prefix_decisions"][key] = out["prefix_decisions"].get(key, 0.0) + float(value)
    return out


class VLLMRouter:
    """One ``vllm-router`` process with ``policy`` in front of ``worker_urls``; ``url`` once ``start`` returns.

    Use as ``async with VLLMRouter(urls) as router:`` or ``await start()`` / ``await aclose()``.
    """

    def __init__(self, worker_urls: list[str], policy: str = "cache_aware", *, log_file: Path | None = None,
                 binary: str | None = None) -> None:
        if not worker_urls:
            raise InputError("vllm-router needs at least one worker URL")
        if policy not in POLICIES:
            raise InputError(f"vllm-router policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.workers = [server_root(u) for u in worker_urls]
        self.policy = policy
        self.binary = binary
        self.log_file = log_file
        self._own_log = False  # a temporary log, removed after a clean stop (kept when the start failed)
        self.url = ""
        self.metrics_url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._keep_log = True
        self._guard = EngineGuard()

    def command(self, binary: str, port: int, metrics_port: int, startup_s: float = 120.0) -> list[str]:
        """Loopback only, its metrics too; it gives up on workers that are not healthy within ``startup_s``."""
        return [
            binary, "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *self.workers,
            "--policy", self.policy, "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
            "--worker-startup-timeout-secs", str(max(1, int(startup_s))), "--worker-startup-check-interval", "1",
            "--log-level", "info",
        ]

    async def start(self, timeout_s: float = 120.0) -> str:
        """Start the router and wait until it lists the workers' models; a failure stops it. Returns its URL.

        The router itself gives up on workers not healthy within ``timeout_s`` (and says so in its log);
        vivace waits a little longer, so that message is the error.
        """
        binary = router_binary(self.binary)
        if self._proc is not None:
            return self.url
        port, metrics_port = free_port(), free_port()
        if self.log_file is None:
            fd, name = tempfile.mkstemp(prefix="vivace-vllm-router-", suffix=".log")
            os.close(fd)
            self.log_file, self._own_log = Path(name), True
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._guard.arm()
        with self.log_file.open("wb") as out:
            self._proc = subprocess.Popen(self.command(binary, port, metrics_port, timeout_s), stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.url, self.metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
        try:
            await self._wait(time.monotonic() + timeout_s + 10.0)
        except BaseException:
            await self.aclose()
            raise
        self._guard.started()
        self._keep_log = False
        log.info("vllm-router (%s) up at %s in front of %s", self.policy, self.url, " ".join(self.workers))
        return self.url

    async def _wait(self, deadline: float) -> None:
        """Until ``/v1/models`` answers through the router: it is listening and reaches a worker."""
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                if self._proc is None or self._proc.poll() is not None:
                    raise BackendError(f"vllm-router exited during start: {self._tail()}")
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    resp = await client.get(self.url + "/v1/models")
                    if resp.status_code == 200 and resp.json().get("data"):
                        return
                if time.monotonic() > deadline:
                    raise BackendError(f"vllm-router did not list the workers' models in time: {self._tail()}")
                await asyncio.sleep(0.25)

    def _tail(self) -> str:
        try:
            lines = (self.log_file.read_text(errors="replace") if self.log_file else "").strip().splitlines()
        except OSError:
            return "(no log)"
        plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]
        last = next((line for line in reversed(plain) if "ERROR" in line or "Error" in line),
                    plain[-1] if plain else "(empty log)")
        return f"{last.strip()[:200]} (log: {self.log_file})"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    async def counters(self) -> dict[str, dict[str, float]]:
        """Requests per worker and prefix-routing outcomes so far, as the router counts them."""
        async with httpx.AsyncClient(timeout=10.0) as client:
            return parse_counters((await client.get(self.metrics_url)).text)

    async def aclose(self, grace_s: float = 10.0) -> None:
        """SIGTERM the router's process group, SIGKILL it after ``grace_s``."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, grace_s)
            except subprocess.TimeoutExpired:
                log.warning("vllm-router did not stop in %g s; killing it", grace_s)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._guard.release()
        if self._own_log and not self._keep_log and self.log_file is not None:
            self.log_file.unlink(missing_ok=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

