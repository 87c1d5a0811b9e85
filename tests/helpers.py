"""Helpers the test modules share: the CLI as a user runs it, and the processes it leaves.

Test modules import from here (or use conftest.py's fixtures), never from one another.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import psutil

T = TypeVar("T")

VIVACE = str(Path(sys.executable).parent / "vivace")


def cli_env(home: Path) -> dict[str, str]:
    """A user's environment for the CLI. Without VLLM_LOGGING_LEVEL: the session's in-process engine
    sets it in this process (``configure_vllm_env``), where a user's shell has the CLI's own default."""
    env = {k: v for k, v in os.environ.items() if k != "VLLM_LOGGING_LEVEL"}
    return {**env, "VIVACE_HOME": str(home), "VIVACE_KV_CACHE_SPACE_GIB": "1", "VIVACE_MAX_NUM_SEQS": "16"}


def vivace(*args: str, home: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VIVACE, *args], capture_output=True, text=True, env=cli_env(home), timeout=timeout)


FAKE = ("--backend", "fake")


def cli(*args: str | bytes, home: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**cli_env(home), **(env or {})}
    return subprocess.run([VIVACE, *args], capture_output=True, text=True, errors="replace", env=environ, cwd=cwd,
                          timeout=300)


def one_line(out: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The command failed with ``code`` and exactly one line on stderr holding every fragment."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code, out.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
    assert all(f in lines[0] for f in fragments), lines[0]
    assert "Traceback" not in out.stderr + out.stdout
    return lines[0]


def free_port() -> int:
    from vivace.runtime.local_server import free_port

    return free_port()


def default_signals() -> None:
    """``preexec_fn`` for a process a test signals: SIGINT and SIGTERM as a terminal's foreground job has them.

    A suite started in the background (``pytest &``, a script, some CI runners) inherits SIGINT
    ignored, and a child would inherit that too: a test of Ctrl-C must not depend on how pytest was started.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def signal_disposition(pid: int, sig: int) -> str:
    """``"ignored"``, ``"caught"`` or ``"default"``: what process ``pid`` does with ``sig`` (from /proc)."""
    masks = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("SigIgn", "SigCgt"):
            masks[key] = int(value.split()[0], 16)
    bit = 1 << (sig - 1)
    return "ignored" if masks["SigIgn"] & bit else "caught" if masks["SigCgt"] & bit else "default"


def wait_for(what: str, check: Callable[[], T], timeout_s: float = 30, poll_s: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline.

    The deadline only keeps a hung test from hanging the suite: it is not a check on speed.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


def read_until(stream: Iterable[str], found: Callable[[str], bool]) -> list[str]:
    """Lines of ``stream`` up to and including the first that ``found`` accepts; fails at end of stream."""
    seen: list[str] = []
    for line in stream:
        seen.append(line)
        if found(line):
            return seen
    raise AssertionError("the stream ended before the awaited line:\n" + "".join(seen)[-3000:])


def session_leftovers(sid: int, wait_s: float = 15) -> list[str]:
    """Processes still alive in a finished command's session (engine core, workers)."""
    deadline = time.time() + wait_s
    while True:
        alive = []
        for proc in psutil.process_iter(["pid", "name", "status"]):
            try:
                if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(f"{proc.pid}:{proc.info['name']}")
            except (ProcessLookupError, psutil.Error):
                continue
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.5)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def survivors(procs: list[psutil.Process], wait_s: float = 30) -> list[str]:
    """Which of ``procs`` (same pid and start time) are still running after ``wait_s``."""
    deadline = time.time() + wait_s
    while True:
        alive = [f"{p.pid}:{p.name()}" for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.5)



def continued_prompt_tokens(model_dir: Path, messages: list[dict[str, str]], prefill: str) -> int:
    """Tokens of the prompt a vLLM server decodes from when it continues ``prefill`` as the open assistant turn.

    Model-independent evidence that a prefill was continued, not answered in a new turn (that prompt is longer).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    text = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": prefill}], tokenize=False,
                                         add_generation_prompt=False, continue_final_message=True)
    return len(tokenizer.encode(text, add_special_tokens=False))
