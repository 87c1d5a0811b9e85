"""Who owns a run: a lock that its holder's death lets go, so a run nobody holds can be told from a running one.

Why not a status column: a process killed with SIGKILL writes nothing more.
``flock`` (SQLite, a file per run) and a session advisory lock (PostgreSQL)
are released by the kernel or the server when their holder dies.
"""

from __future__ import annotations

import fcntl
import os
import threading
import zlib
from pathlib import Path
from typing import Any


class RunLocks:
    """Who owns a run: a lock that its holder's death lets go. Re-claiming in the same process fails too."""

    def __init__(self) -> None:
        self._mine: set[str] = set()
        self._guard = threading.Lock()

    def acquire(self, run_id: str) -> bool:
        with self._guard:
            if run_id in self._mine or not self._take(run_id):
                return False
            self._mine.add(run_id)
            return True

    def release(self, run_id: str) -> None:
        with self._guard:
            if run_id in self._mine:
                self._mine.discard(run_id)
                self._drop(run_id)

    def free(self, run_id: str) -> bool:
        """Whether nobody holds ``run_id`` (tested by taking and letting go)."""
        with self._guard:
            if run_id in self._mine:
                return False
            if not self._take(run_id):
                return False
            self._drop(run_id)
            return True

    def forget(self, run_id: str) -> None:
        """A pruned run's lock leaves no trace."""

    def close(self) -> None:
        for run_id in list(self._mine):
            self.release(run_id)

    def _take(self, run_id: str) -> bool:
        raise NotImplementedError

    def _drop(self, run_id: str) -> None:
        raise NotImplementedError


class FileLocks(RunLocks):
    """``flock`` on ``DIR/<run id>``: per open file, so two claims in one process exclude each other too."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self._fds: dict[str, int] = {}

    def _take(self, run_id: str) -> bool:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / run_id, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fds[run_id] = fd
        return True

    def _drop(self, run_id: str) -> None:
        fd = self._fds.pop(run_id, None)
        if fd is not None:
            os.close(fd)

    def forget(self, run_id: str) -> None:
        try:
            (self.folder / run_id).unlink()
        except FileNotFoundError:
            pass


class AdvisoryLocks(RunLocks):
    """A session advisory lock per run on a connection of its own: PostgreSQL lets go when the holder dies."""

    def __init__(self, conn: Any) -> None:
        super().__init__()
        self.conn = conn

    @staticmethod
    def _key(run_id: str) -> int:
        return zlib.crc32(run_id.encode()) - 2**31  # fits the bigint; a clash only makes two runs exclusive

    def _take(self, run_id: str) -> bool:
        row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key(run_id),)).fetchone()
        return bool(row[0])

    def _drop(self, run_id: str) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (self._key(run_id),))

    def close(self) -> None:
        super().close()
        self.conn.close()
