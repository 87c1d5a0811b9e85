"""Durable runs on LangGraph's checkpoint savers: SQLite in ``$VIVACE_HOME`` by default, PostgreSQL when configured.

Why the savers' writes and not a checkpoint per step: a run is one saver
thread (``thread_id`` = the run id). Its first checkpoint holds the run's
header (target, task, options); every finished step adds one *pending write*
to it, keyed by the step's place in the run (``vivace.agents.journal``), the
same mechanism LangGraph uses to keep a superstep's finished tasks. So a
checkpoint never stores the whole state again (the growth the SQLite saver's
users hit), and a resume reads one checkpoint with its writes. A last
checkpoint, the child of the header, holds the status and the run's record.

Which process owns a run is a lock that dies with its holder: ``flock`` on a
file per run beside the SQLite database, a session advisory lock on
PostgreSQL. A run marked running whose lock is free was killed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from vivace.errors import BackendError, BusyError, InputError
from vivace.runtime.run_locks import AdvisoryLocks, FileLocks, RunLocks

log = logging.getLogger(__name__)

T = TypeVar("T")
STEP_CHANNEL = "vivace.step"
THREAD = "thread:"  # a conversation's saver thread, beside the runs' (whose ids are hex)


@dataclass
class StoredRun:
    """A run as its checkpoints tell it: the header, the steps it finished (key -> value), and its status."""

    run_id: str
    header: dict[str, Any]
    steps: dict[str, Any]
    status: str
    meta: dict[str, Any] = field(default_factory=dict)  # the latest checkpoint's metadata
    record: dict[str, Any] | None = None  # the run's record, once it ended


def redact(url: str) -> str:
    """``url`` without its password: what logs and errors may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def _checkpoint(values: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """A checkpoint holding ``values``, and the channel versions to pass to ``put`` with it.

    Why versions: PostgresSaver keeps a value that is not a str/number/bool only
    in its blobs table, under the version ``put`` names for it; with none, it
    drops the value without a word (SQLite keeps the whole checkpoint either way).
    """
    from langgraph.checkpoint.base import empty_checkpoint

    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = dict(values)
    versions = {key: checkpoint["id"] for key in values}  # unique per checkpoint: a thread's turns share a channel
    checkpoint["channel_versions"] = dict(versions)
    return checkpoint, versions


class RunStore:
    """One saver, one worker thread for it, and the run locks; opened once per runtime, closed with it."""

    def __init__(self, saver: Any, kind: str, where: str, keep_runs: int, locks: RunLocks) -> None:
        self.saver, self.kind, self.where, self.keep_runs = saver, kind, where, keep_runs
        self._locks = locks
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="vivace-checkpoints")
        # run id -> its header checkpoint id and metadata (the runs this process writes): a finish reads neither back
        self._headers: dict[str, tuple[str | None, dict[str, Any]]] = {}
        self._finished = 0
        self._claimed: set[str] = set()  # runs this process took over to resume

    # ---- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str | None, home: Path, keep_runs: int) -> "RunStore":
        """The store at ``url`` (``postgresql://...``, ``sqlite:///path``), else ``home/checkpoints.db``."""
        if url and url.startswith(("postgresql://", "postgres://")):
            return cls._postgres(url, keep_runs)
        path = Path(url[len("sqlite:///") - 1:] if url and url.startswith("sqlite:///") else home / "checkpoints.db")
        if url and not url.startswith("sqlite:///"):
            raise InputError(f"checkpoint_url must be postgresql://... or sqlite:///PATH, got {redact(url)!r}")
        from langgraph.checkpoint.sqlite import SqliteSaver

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, timeout=5.0)
            conn.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process; a power cut may lose the last steps
            saver = SqliteSaver(conn)
            saver.setup()
        except sqlite3.Error as exc:
            raise BackendError(f"checkpoint database {path} cannot be used: {exc}") from exc
        return cls(saver, "sqlite", str(path), keep_runs, FileLocks(path.with_name(path.name + ".locks")))

    @classmethod
    def _postgres(cls, url: str, keep_runs: int) -> "RunStore":
        try:
            import psycopg
            from psycopg.rows import dict_row
            from langgraph.checkpoint.postgres import PostgresSaver
        except ModuleNotFoundError as exc:
            raise BackendError(f"checkpoint_url is PostgreSQL, but {exc.name} is missing: "
                               "pip install 'vivace[postgres]'") from exc
        try:
            conn = psycopg.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row, connect_timeout=5)
            lock_conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
            saver = PostgresSaver(conn)
            saver.setup()
        except psycopg.Error as exc:
            raise BackendError(f"checkpoint database {redact(url)} cannot be used: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from exc
        return cls(saver, "postgres", redact(url), keep_runs, AdvisoryLocks(lock_conn))

    async def aclose(self) -> None:
        await self._run(self._close)
        self._pool.shutdown(wait=True)

    def _close(self) -> None:
        self._locks.close()
        self.saver.conn.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn`` on the store's thread: the event loop never waits on a disk or a socket."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _guard(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except (InputError, BackendError, BusyError):
            raise
        except Exception as exc:  # sqlite3.Error, psycopg.Error: a locked, corrupt or unreachable database
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"checkpoint database {self.where}: {first}") from exc

    @staticmethod
    def _config(run_id: str, checkpoint_id: str | None = None) -> dict[str, Any]:
        conf: dict[str, Any] = {"thread_id": run_id, "checkpoint_ns": ""}
        if checkpoint_id:
            conf["checkpoint_id"] = checkpoint_id
        return {"configurable": conf}

    # ---- writing a run ------------------------------------------------------------------------

    async def begin(self, run_id: str, header: dict[str, Any], summary: dict[str, Any]) -> None:
        """Claim ``run_id`` and store its header: from here on the run can be resumed."""
        await self._run(self._guard, self._begin, run_id, header, summary)

    def _begin(self, run_id: str, header: dict[str, Any], summary: dict[str, Any]) -> None:
        if not self._locks.acquire(run_id):
            raise BusyError(f"run {run_id} is already running in another process")
        checkpoint, versions = _checkpoint({"header": header})
        meta = {"source": "input", "step": -1, "vivace": "run", "status": "running", **summary}
        self.saver.put(self._config(run_id), checkpoint, meta, versions)
        self._headers[run_id] = (checkpoint["id"], meta)

    async def save_step(self, run_id: str, key: str, value: Any) -> None:
        """One finished step's output, under its key: the whole of what a resume needs from it."""
        await self._run(self._guard, self._save_step, run_id, key, value)

    def _save_step(self, run_id: str, key: str, value: Any) -> None:
        config = self._config(run_id, self._headers[run_id][0])
        self.saver.put_writes(config, [(STEP_CHANNEL, value)], task_id=key)

    async def finish(self, run_id: str, status: str, record: dict[str, Any] | None,
                     summary: dict[str, Any] | None = None) -> None:
        """The run's status and record, as a child of its header; the run's lock is let go."""
        await self._run(self._guard, self._finish, run_id, status, record, summary or {})

    def _finish(self, run_id: str, status: str, record: dict[str, Any] | None, summary: dict[str, Any]) -> None:
        try:
            header_id, begun = self._headers.pop(run_id) if run_id in self._headers else self._header(run_id)
            checkpoint, versions = _checkpoint({"record": record} if record is not None else {})
            meta = {**begun, "source": "update", "step": 0, "status": status, **summary}
            self.saver.put(self._config(run_id, header_id), checkpoint, meta, versions)
        finally:
            self._locks.release(run_id)
        self._finished += 1
        if self._finished % 25 == 1:  # the first finish of a process, then every 25th: pruning reads every thread
            self._prune()

    def _header(self, run_id: str) -> tuple[str | None, dict[str, Any]]:
        """A run's header checkpoint id and metadata, read back (a run another process began)."""
        tuples = list(self.saver.list(self._config(run_id), filter={"step": -1}, limit=1))
        if not tuples:
            return None, {}
        return tuples[0].config["configurable"]["checkpoint_id"], dict(tuples[0].metadata or {})

    # ---- reading runs -------------------------------------------------------------------------

    async def load(self, run_id: str) -> StoredRun | None:
        return await self._run(self._guard, self.load_now, run_id)

    def load_now(self, run_id: str) -> StoredRun | None:
        """The run's header, finished steps and status (``killed``: marked running, nobody holds it)."""
        latest = self.saver.get_tuple(self._config(run_id))
        if latest is None:
            return None
        meta = dict(latest.metadata or {})
        header_tuple = latest if meta.get("step") == -1 else self.saver.get_tuple(latest.parent_config or {})
        if header_tuple is None:
            raise BackendError(f"checkpoint database {self.where}: run {run_id} has no header")
        steps = {task: value for task, channel, value in header_tuple.pending_writes or [] if channel == STEP_CHANNEL}
        status = self._status(run_id, meta.get("status", "running"))
        record = latest.checkpoint["channel_values"].get("record") if latest is not header_tuple else None
        return StoredRun(run_id, header_tuple.checkpoint["channel_values"].get("header", {}), steps, status, meta,
                         record)

    def _status(self, run_id: str, status: str) -> str:
        """``killed`` for a run marked running that nobody holds (or that this process took over to resume)."""
        if status == "running" and (run_id in self._claimed or self._locks.free(run_id)):
            return "killed"
        return status

    async def claim(self, run_id: str) -> bool:
        """Take over a run that ended (to resume it): False when another process holds it."""
        taken = await self._run(self._locks.acquire, run_id)
        if taken:
            self._claimed.add(run_id)
        return taken

    async def release(self, run_id: str) -> None:
        self._claimed.discard(run_id)
        await self._run(self._locks.release, run_id)

    async def mark(self, run_id: str, status: str, **summary: Any) -> None:
        """A new status for a run that ended (``resumed``, with the run that took over)."""
        await self._run(self._guard, self._mark, run_id, status, summary)

    def _mark(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        latest = self.saver.get_tuple(self._config(run_id))
        if latest is None:
            return
        killed = latest.metadata.get("step") == -1  # no last checkpoint: the new status is the header's child
        checkpoint, versions = _checkpoint({} if killed else latest.checkpoint["channel_values"])
        meta = {**latest.metadata, "source": "update", "step": int(latest.metadata.get("step", 0)) + 1,
                "status": status, **summary}
        parent_config = latest.config if killed else latest.parent_config
        parent = parent_config["configurable"]["checkpoint_id"] if parent_config else None
        self.saver.put(self._config(run_id, parent), checkpoint, meta, versions)

    # ---- conversations ------------------------------------------------------------------------

    async def turns(self, thread: str, limit: int = 100) -> list[dict[str, Any]]:
        """A thread's turns, oldest first (``{"user", "assistant", "run_id"}``)."""
        return await self._run(self._guard, self._turns, thread, limit)

    def _turns(self, thread: str, limit: int) -> list[dict[str, Any]]:
        tuples = list(self.saver.list(self._config(THREAD + thread), limit=limit))
        return [t.checkpoint["channel_values"]["turn"] for t in reversed(tuples) if "turn" in t.checkpoint["channel_values"]]

    async def add_turn(self, thread: str, turn: dict[str, Any]) -> None:
        """One more turn: a checkpoint of its own holding only that turn (a thread never re-stores its past)."""
        await self._run(self._guard, self._add_turn, thread, turn)

    def _add_turn(self, thread: str, turn: dict[str, Any]) -> None:
        latest = self.saver.get_tuple(self._config(THREAD + thread))
        checkpoint, versions = _checkpoint({"turn": turn})
        step = int(latest.metadata.get("step", 0)) + 1 if latest else 0
        parent = latest.config["configurable"]["checkpoint_id"] if latest else None
        self.saver.put(self._config(THREAD + thread, parent), checkpoint,
                       {"source": "input", "step": step, "vivace": "thread", "thread": thread}, versions)

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest runs first, each its latest checkpoint's metadata with ``status`` (killed ones named)."""
        return self._guard(self._runs, limit)

    def _runs(self, limit: int) -> list[dict[str, Any]]:
        rows = self._latest_rows(limit)
        out = []
        for thread_id, meta in rows:
            if meta.get("vivace") != "run":
                continue
            meta["status"] = self._status(thread_id, meta.get("status", "running"))
            out.append({"run_id": thread_id, **{k: v for k, v in meta.items() if k not in ("source", "step", "vivace")}})
        return out

    def _latest_rows(self, limit: int | None, offset: int = 0, threads: bool = False) -> list[tuple[str, dict[str, Any]]]:
        """(run, metadata of its latest checkpoint), newest run first; the savers list no threads.

        ``threads``: the conversations instead, the most recently active first.
        """
        with self._cursor() as cur:
            ph = "%s" if self.kind == "postgres" else "?"
            which, order = ("LIKE", "t.last") if threads else ("NOT LIKE", "t.first")
            cur.execute(
                "SELECT c.thread_id, c.metadata FROM checkpoints c JOIN ("
                " SELECT thread_id, MAX(checkpoint_id) AS last, MIN(checkpoint_id) AS first FROM checkpoints"
                f" WHERE checkpoint_ns = '' AND thread_id {which} {ph} GROUP BY thread_id) t"
                " ON c.thread_id = t.thread_id AND c.checkpoint_id = t.last AND c.checkpoint_ns = ''"
                f" ORDER BY {order} DESC LIMIT {ph} OFFSET {ph}",
                (THREAD + "%", limit if limit is not None else -1 if self.kind == "sqlite" else None, offset))
            rows = cur.fetchall()
        out = []
        for row in rows:
            thread_id, meta = (row["thread_id"], row["metadata"]) if isinstance(row, dict) else row
            if isinstance(meta, (bytes, str)):
                meta = json.loads(meta)
            out.append((thread_id, dict(meta or {})))
        return out

    def _cursor(self) -> Any:
        if self.kind == "postgres":
            return self.saver._cursor()
        return self.saver.cursor(transaction=False)

    def prune(self) -> int:
        """Delete the oldest runs beyond ``keep_runs`` (never one that is running), and as many idle conversations."""
        return self._guard(self._prune)

    def _prune(self) -> int:
        old = self._latest_rows(None, offset=self.keep_runs) + self._latest_rows(None, self.keep_runs, threads=True)
        gone = 0
        for thread_id, meta in old:
            if meta.get("status") == "running" and not self._locks.free(thread_id):
                continue
            self.saver.delete_thread(thread_id)
            self._locks.forget(thread_id)
            gone += 1
        if gone:
            log.info("pruned %d old runs from %s (keep_runs=%d)", gone, self.where, self.keep_runs)
        return gone

    def size_bytes(self) -> int | None:
        """The database's size on disk (SQLite with its WAL; PostgreSQL's database)."""
        if self.kind == "sqlite":
            return sum(p.stat().st_size for p in Path(self.where).parent.glob(Path(self.where).name + "*")
                       if p.is_file())
        with self._cursor() as cur:
            cur.execute("SELECT pg_database_size(current_database()) AS n")
            row = cur.fetchone()
            return int(row["n"] if isinstance(row, dict) else row[0])
