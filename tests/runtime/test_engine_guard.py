"""The engine guard on real processes: a parent that starts a stand-in engine the way vLLM does
(a spawned multiprocessing child, from a worker thread), then is killed or interrupted.

The same guard around the real engine is tested end to end in tests/test_cli.py
(SIGKILL of vivace mid-generation, Ctrl-C to the process group).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import default_signals, signal_disposition

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the guard reads /proc")

PARENT = textwrap.dedent("""
    import multiprocessing, os, sys, threading, time
    from vivace.runtime.engine_guard import EngineGuard, sigint_blocked

    def engine():
        time.sleep(300)

    def start(out):
        with sigint_blocked():
            ctx = multiprocessing.get_context("spawn")
            proc = ctx.Process(target=engine, daemon=False)
            proc.start()
            out.append(proc)

    if __name__ == "__main__":
        guard = EngineGuard()
        guard.arm()
        out = []
        t = threading.Thread(target=start, args=(out,))
        t.start(); t.join()
        guard.started()
        try:  # from the moment the test has the pids, a Ctrl-C may come (on a loaded machine, mid-print)
            print(guard.pid, out[0].pid, flush=True)
            if sys.argv[1] == "release":
                guard.release()
                print("released", flush=True)
            time.sleep(300)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            os._exit(130)  # no cleanup: what is left is the watchdog's
""")


def start_parent(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], int, int]:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    # SIGINT as a terminal's foreground process has it, also when the suite runs as a background job (ignored there).
    proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=tmp_path, preexec_fn=default_signals)
    assert proc.stdout is not None
    watchdog, child = (int(x) for x in proc.stdout.readline().split())
    return proc, watchdog, child


def gone(pid: int, wait_s: float) -> bool:
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def reap(*pids: int) -> None:
    """A failed test must not leave its stand-ins running."""
    for pid in pids:
        if not gone(pid, 0.1):
            os.kill(pid, signal.SIGKILL)


def signal_mask(pid: int, field: str) -> int:
    """A signal set of process ``pid`` from /proc: ``SigBlk`` (blocked), ``ShdPnd`` (sent to it, not yet handled)."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(f"{field}:"))
    return int(line.split()[1], 16)


def blocked_signals(pid: int) -> int:
    return signal_mask(pid, "SigBlk")


def test_a_killed_parent_takes_its_engine_with_it(tmp_path: Path) -> None:
    proc, watchdog, child = start_parent(tmp_path, "stay")
    try:
        assert psutil.Process(child).ppid() == proc.pid
        os.kill(proc.pid, signal.SIGKILL)  # as the OOM killer does: no handler, no cleanup
        proc.wait(timeout=10)
        assert gone(child, 15), "the engine stand-in outlived its killed parent"
        assert gone(watchdog, 15), "the watchdog did not exit after its work"
    finally:
        reap(child, watchdog)


def test_the_engine_does_not_hear_the_terminals_ctrl_c(tmp_path: Path) -> None:
    proc, watchdog, child = start_parent(tmp_path, "stay")
    try:
        assert blocked_signals(child) & (1 << (signal.SIGINT - 1)), "SIGINT is not blocked in the spawned engine"
        assert not blocked_signals(proc.pid) & (1 << (signal.SIGINT - 1)), "the parent's main thread must hear Ctrl-C"
        assert os.getsid(watchdog) == watchdog != os.getsid(proc.pid)  # out of the terminal's process group
        assert signal_disposition(proc.pid, signal.SIGINT) == "caught"  # Python's Ctrl-C, as in a terminal
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        # kill() queues the signal on every process of the group before it returns: the stand-in has it, blocked.
        assert signal_mask(child, "ShdPnd") & (1 << (signal.SIGINT - 1)), "the engine stand-in was not sent SIGINT"
        assert proc.stdout is not None and proc.stdout.readline().strip() == "interrupted"
        assert proc.wait(timeout=10) == 130
        assert not gone(child, 0), "the engine stand-in died of the terminal's SIGINT"
        assert gone(child, 15)  # the parent left without shutting it down: the watchdog ends it
    finally:
        reap(child, watchdog)


def test_a_released_guard_kills_nothing(tmp_path: Path) -> None:
    proc, watchdog, child = start_parent(tmp_path, "release")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "released"
        assert gone(watchdog, 5), "a released watchdog exits at once"
        # Released means vivace shut its engine down itself: what is left is not the watchdog's to kill.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert not gone(child, 3)
    finally:
        reap(child, watchdog)
