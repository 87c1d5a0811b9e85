"""The engine watchdog: a tiny process that ends vLLM's engine processes when vivace dies.

Run by ``vivace.runtime.engine_guard`` as ``python -I -S _watchdog.py PARENT_PID BASELINE_PIDS``
in a session of its own (so a terminal's Ctrl-C does not reach it). Standard
library only, and no vivace import, so it starts in a few milliseconds.

While the parent starts its engine, every new child of the parent (not in the
baseline) is tracked with its start time, so a reused pid is never killed.
The parent writes ``started PID...`` once the engine is up, naming its
processes (tracking then stops growing), and ``release`` when it has shut the
engine down itself. If instead
the parent goes away (its pipe reaches EOF, or this process is re-parented),
the tracked processes and their descendants get SIGTERM, then SIGKILL after
a grace period.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

POLL_S = 0.25
GRACE_S = 3.0


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()  # the command name may hold spaces and parentheses
    if fields[0] == b"Z":  # a zombie has already exited
        return None
    return int(fields[1]), int(fields[19])


def _processes() -> dict[int, tuple[int, int]]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                out[int(name)] = stat
    return out


def _children(table: dict[int, tuple[int, int]], parents: set[int]) -> set[int]:
    return {pid for pid, (ppid, _) in table.items() if ppid in parents}


def _descendants(table: dict[int, tuple[int, int]], roots: set[int]) -> set[int]:
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = _children(table, frontier) - found
        found |= frontier
    return found


def _kill(tracked: dict[int, int]) -> None:
    table = _processes()
    alive = {pid for pid, start in tracked.items() if pid in table and table[pid][1] == start}
    victims = {pid: table[pid][1] for pid in _descendants(table, alive)}
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 0.0)):
        for pid, start in victims.items():
            stat = _stat(pid)
            if stat is not None and stat[1] == start:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(
            (s := _stat(pid)) is not None and s[1] == start for pid, start in victims.items()
        ):
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    parent = int(argv[1])
    baseline = {int(p) for p in argv[2].split(",") if p} if len(argv) > 2 else set()
    baseline.add(os.getpid())
    tracked: dict[int, int] = {}
    growing = True
    buffer = b""
    while True:
        if growing:
            table = _processes()
            for pid in _children(table, {parent}) - baseline:
                tracked.setdefault(pid, table[pid][1])
        ready, _, _ = select.select([sys.stdin], [], [], POLL_S)
        chunk = os.read(sys.stdin.fileno(), 4096) if ready else None
        buffer += chunk or b""
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            word, *pids = line.split()
            if word == b"release":
                return 0
            if word == b"started":  # the parent names its engine's processes: no more guessing
                for pid in map(int, pids):
                    stat = _stat(pid)
                    if stat is not None:
                        tracked.setdefault(pid, stat[1])
                growing = False
        # EOF: the parent died (or exited without shutting its engine down); or it was re-parented.
        if chunk == b"" or os.getppid() != parent:
            break
    _kill(tracked)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(main(sys.argv))
