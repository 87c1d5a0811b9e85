"""Shared fixtures: one real vLLM engine per test session, on one event loop.

vLLM's AsyncLLM binds its output handler to the loop it first runs on, so the
engine and every test that uses it share a loop that lives in a background
thread for the whole session; tests hand it coroutines through ``run``.

Plain helpers the test modules share (the CLI as a user runs it, signal dispositions,
waiting for an event) are in tests/helpers.py: test modules never import one another.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import pytest

T = TypeVar("T")

# The engine shares 2 cores with the tests; keep its KV cache small and explicit.
ENGINE_ENV = {"VIVACE_KV_CACHE_SPACE_GIB": "1", "VIVACE_MAX_NUM_SEQS": "32"}


@pytest.fixture(scope="session")
def vivace_home() -> Path:
    """Where the embedded model is prepared; shared with the CLI subprocesses the tests start."""
    home = Path(os.environ.get("VIVACE_HOME", Path("~/.cache/vivace").expanduser()))
    home.mkdir(parents=True, exist_ok=True)
    return home


@pytest.fixture(scope="session")
def model_dir(vivace_home: Path) -> Path:
    from vivace.runtime.models import EMBEDDED, prepare

    return prepare(EMBEDDED, vivace_home)


class LoopRunner:
    """A loop in a thread; ``run(coro)`` blocks the test until the coroutine is done."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float = 600) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def loop_runner() -> Iterator[LoopRunner]:
    runner = LoopRunner()
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def run(loop_runner: LoopRunner) -> Callable[..., Any]:
    return loop_runner.run


@pytest.fixture(scope="session")
def engine(loop_runner: LoopRunner, model_dir: Path) -> Iterator[Any]:
    """The real embedded engine (VLLMBackend), started once for the whole session."""
    from vivace.runtime.vllm_options import EngineOptions
    from vivace.runtime.vllm_engine import VLLMBackend

    options = EngineOptions(
        model=str(model_dir),
        kv_cache_space_gib=float(ENGINE_ENV["VIVACE_KV_CACHE_SPACE_GIB"]),
        max_num_seqs=int(ENGINE_ENV["VIVACE_MAX_NUM_SEQS"]),
        served_model_name="smollm2-135m",
        scheduling_policy="priority",  # as the default config (scheduling = "program") starts it
    )
    backend = loop_runner.run(VLLMBackend.start(options))
    yield backend
    loop_runner.run(backend.aclose())


_API_SERVER_FAILURE: list[str] = []


@pytest.fixture(scope="module")
def api_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory, loop_runner: LoopRunner) -> Iterator[str]:
    """A real vLLM OpenAI-compatible server on loopback; yields its base URL.

    Module-scoped: an idle engine still takes CPU, so it is stopped once its tests are done.

    A start that failed is not retried for every test that asks (each try waits minutes).
    """
    if _API_SERVER_FAILURE:
        pytest.fail(f"api_server failed to start earlier in this session: {_API_SERVER_FAILURE[0]}")
    from vivace.runtime.local_server import LocalServers, ServerOptions

    servers = LocalServers(ServerOptions(str(model_dir), dev_mode=False), 1, tmp_path_factory.mktemp("api_server"))
    try:
        (url,) = loop_runner.run(servers.start())
    except Exception as exc:
        _API_SERVER_FAILURE.append(str(exc)[:300])
        raise
    try:
        yield url
    finally:  # a fault test may have killed it already
        loop_runner.run(servers.aclose())


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL (tests/postgres.py) for the whole session: its ``postgresql://`` URL, with a password."""
    from tests.postgres import binaries, running

    bin_dir = binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl): apt-get install postgresql")
    with running(bin_dir) as server:
        yield server.url
