"""vLLM's own OpenAI-compatible servers, started on loopback from a local model folder.

Why vivace starts them at all: ``vivace bench fleet`` measures routing across
real servers on one machine without asking the user to start and stop them,
and the tests need the same real server. The servers:

- listen on 127.0.0.1 only, with telemetry off and an explicit KV space
  (``cpu_engine_env``), and report cached prompt tokens
  (``--enable-prompt-tokens-details``);
- run with ``VLLM_SERVER_DEV_MODE=1`` when asked, which adds vLLM's
  ``/reset_prefix_cache`` (so a bench starts every run from a cold cache) and
  nothing that listens beyond loopback;
- sit in sessions of their own, so a terminal's Ctrl-C reaches only vivace,
  which stops them; an ``EngineGuard`` watchdog ends them if vivace is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from vivace.errors import BackendError
from vivace.runtime.engine_guard import EngineGuard

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServerOptions:
    model: str  # a local folder
    served_model_name: str = "smollm2-135m"
    max_model_len: int = 2048
    dtype: str = "auto"  # auto: the host's own choice (host_dtype)
    kv_cache_space_gib: float = 1.0
    max_num_seqs: int = 16
    dev_mode: bool = True  # /reset_prefix_cache

    def command(self, port: int) -> list[str]:
        from vivace.runtime.vllm_options import host_dtype

        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model, "--served-model-name", self.served_model_name,
            "--host", "127.0.0.1", "--port", str(port),
            "--max-model-len", str(self.max_model_len), "--enforce-eager",
            "--dtype", host_dtype() if self.dtype == "auto" else self.dtype,
            "--enable-prompt-tokens-details", "--max-num-seqs", str(self.max_num_seqs),
        ]

    def environment(self) -> dict[str, str]:
        from vivace.runtime.vllm_options import cpu_engine_env

        env = {**os.environ, **cpu_engine_env(self.kv_cache_space_gib), "HF_HUB_OFFLINE": "1"}
        if self.dev_mode:
            env["VLLM_SERVER_DEV_MODE"] = "1"
        return env


class LocalServers:
    """``n`` servers of one model, started together; ``urls`` once ``start`` returns."""

    def __init__(self, options: ServerOptions, n: int, log_dir: Path) -> None:
        if n < 1:
            raise ValueError("at least one server")
        self.options, self.n, self.log_dir = options, n, log_dir
        self.urls: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._guard = EngineGuard()

    def log_file(self, i: int) -> Path:
        return self.log_dir / f"server-{i}.log"

    async def start(self, timeout_s: float = 420.0) -> list[str]:
        """Start every server and wait until all answer ``/health``; a failure stops them all."""
        if not Path(self.options.model).is_dir():
            raise BackendError(f"a local server needs a model folder; {self.options.model!r} is not one")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._guard.arm()
        for i in range(self.n):
            port = free_port()
            with self.log_file(i).open("wb") as out:
                self._procs.append(subprocess.Popen(
                    self.options.command(port), stdout=out, stderr=subprocess.STDOUT,
                    env=self.options.environment(), start_new_session=True))
            self.urls.append(f"http://127.0.0.1:{port}")
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                await asyncio.gather(*(self._wait(i, client, time.monotonic() + timeout_s) for i in range(self.n)))
        except BaseException:
            await self.aclose()
            raise
        self._guard.started()
        log.info("%d vLLM server(s) up: %s", self.n, " ".join(self.urls))
        return self.urls

    async def _wait(self, i: int, client: httpx.AsyncClient, deadline: float) -> None:
        while True:
            if self._procs[i].poll() is not None:
                raise BackendError(f"vLLM server {i} exited during start: {self._tail(i)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(self.urls[i] + "/health")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise BackendError(f"vLLM server {i} did not answer /health in time: {self._tail(i)}")
            await asyncio.sleep(1.0)

    def _tail(self, i: int) -> str:
        try:
            lines = self.log_file(i).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        last = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "(empty log)")
        return f"{last.strip()[:200]} (log: {self.log_file(i)})"

    def kill(self, i: int) -> None:
        """SIGKILL server ``i`` and its engine: a machine that dies, for fault benches and tests."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._procs[i].pid, signal.SIGKILL)
        self._procs[i].wait()

    async def aclose(self) -> None:
        """SIGTERM every server's process group, SIGKILL what is left after 30 s."""
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self._procs:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._procs.clear()
        self._guard.release()
