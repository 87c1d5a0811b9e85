"""Ties vLLM's engine processes to vivace's own lifetime.

Why: vLLM runs its engine core in a spawned process (and, with some
executors, workers below it), and vivace shuts that engine down itself
(``VLLMBackend.aclose``). Two things went wrong around it:

- a terminal's Ctrl-C goes to the whole foreground process group, so the
  engine processes got it too and printed their own tracebacks before
  vivace's one-line "interrupted";
- when vivace was killed outright (SIGKILL, the OOM killer, a crashed
  supervisor), the engine was re-parented to init and kept running.

``EngineGuard`` answers both: the engine is started from a thread that blocks
SIGINT, a mask its processes inherit across fork and exec (Python leaves a
blocked signal blocked), so only vivace hears Ctrl-C; and a watchdog process
(``vivace/runtime/_watchdog.py``) ends the engine's processes when vivace goes
away without shutting them down. Linux only (it reads ``/proc``); elsewhere the
guard does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Iterator

log = logging.getLogger(__name__)

_WATCHDOG = Path(__file__).with_name("_watchdog.py")


def _supported() -> bool:
    return sys.platform.startswith("linux") and os.path.isdir("/proc/self")


def children(pid: int) -> set[int]:
    """The live children of ``pid``, from ``/proc`` (every thread's list)."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found.update(int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except (OSError, ValueError):
            continue
    return found


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread only; processes spawned meanwhile inherit the block.

    Run it in the thread that starts the engine, not the main thread: the
    main thread must still hear Ctrl-C and turn it into ``KeyboardInterrupt``.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # multiprocessing starts its resource tracker on the first spawn with SIGINT blocked, then
    # unblocks SIGINT in the calling thread, which would lift this block: start it first.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class EngineGuard:
    """The watchdog for one engine: ``arm`` before it starts, ``started`` once up, ``release`` after shutdown."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._baseline: set[int] = set()

    def arm(self) -> None:
        """Start the watchdog; every child this process spawns from now until ``started`` is the engine's."""
        if not _supported() or self._proc is not None:
            return
        me = os.getpid()
        self._baseline = children(me)
        baseline = ",".join(str(p) for p in sorted(self._baseline))
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_WATCHDOG), str(me), baseline],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,  # out of the terminal's reach: Ctrl-C must not end it
            )
        except OSError as exc:  # a missing watchdog costs only the orphan protection
            log.warning("engine watchdog not started: %s", exc)

    def started(self) -> None:
        """The engine is up: its processes are this process's children that came since ``arm``."""
        if self._proc is not None:
            mine = children(os.getpid()) - self._baseline - {self._proc.pid}
            self._send(" ".join(["started", *map(str, sorted(mine))]).encode() + b"\n")

    def release(self) -> None:
        """The engine was shut down by vivace: the watchdog exits without killing anything."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._write(proc.stdin, b"release\n")
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _send(self, data: bytes) -> None:
        if self._proc is not None:
            self._write(self._proc.stdin, data)

    @staticmethod
    def _write(stream: IO[bytes] | None, data: bytes) -> None:
        if stream is None:
            return
        with contextlib.suppress(OSError, ValueError):  # a watchdog that died is not the run's problem
            stream.write(data)
            stream.flush()
