"""The `vivace serve` processes the serve tests share: one on the fake backend, one on the real engine.

Package scope: every module here talks to the same two servers, so the
engine (about 30 s to start) starts once for all of them. Each server runs in
its own session (``start_new_session``), so the tests' Ctrl-C reaches it as a
terminal's would, and nothing it leaves behind outlives the test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from tests.helpers import VIVACE, cli_env, default_signals, session_leftovers

PIPELINE = """
name = "tidy"
[steps]
draft = "answer"
"""

# A served pipeline whose one step is the chat agent: it reads the earlier turns from the run's options.
CONVERSE = """
name = "converse"
[steps]
reply = "chat"
"""


class Server:
    def __init__(self, proc: subprocess.Popen[str], url: str, lines: list[str]) -> None:
        self.proc, self.url, self.lines = proc, url, lines

    def client(self, key: str = "unused", **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kw)

    def aclient(self, **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, **kw)

    def run(self, run_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.url}/v1/runs/{run_id}", timeout=30).json()

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics, by name and labels (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            found = dict(re.findall(r'(\w+)="([^"]*)"', head))
            if head.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
                return float(value)
        return 0.0


def start_server(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Server:
    proc = subprocess.Popen([VIVACE, "serve", "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**cli_env(home), **(env or {})}, start_new_session=True,
                            preexec_fn=default_signals)  # Ctrl-C as a terminal gives it, however the suite started
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        text = "".join(lines).replace("\n", " ")
        if (m := re.search(r"serving on (http://\S+?)/v1", text)) and "Ctrl-C stops" in text:
            return Server(proc, m.group(1), lines)
    proc.kill()
    raise AssertionError(f"vivace serve did not start: {text[-2000:]}")


def stop(server: Server) -> tuple[int, str]:
    os.killpg(server.proc.pid, signal.SIGINT)  # a terminal's Ctrl-C
    _, err = server.proc.communicate(timeout=120)
    return server.proc.returncode, err


@pytest.fixture(scope="package")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("serve-fake")
    files = []
    for name, text in (("tidy", PIPELINE), ("converse", CONVERSE)):
        (home / f"{name}.toml").write_text(text)
        files += ["--pipeline", str(home / f"{name}.toml")]
    server = start_server(home, "--backend", "fake", *files,
                          env={"VIVACE_SERVE_API_KEY": ""})  # no key, whatever the environment has
    yield server
    code, err = stop(server)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, err


@pytest.fixture(scope="package")
def engine_server(vivace_home: Path, model_dir: Path) -> Iterator[Server]:
    server = start_server(vivace_home, "--max-in-flight", "8", "--max-tokens", "256", timeout=600)
    yield server
    code, err = stop(server)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, err[-3000:]
    assert session_leftovers(server.proc.pid) == []
