"""A private PostgreSQL for the tests, from the Debian package's binaries: started once, stopped at the end.

Why a real server and not a mock: the run store's PostgreSQL side is
LangGraph's saver plus session advisory locks, and what matters (a lock that
dies with its holder's connection, two replicas sharing one database) only a
real server does. It lives in a temporary folder, listens on 127.0.0.1 on a
free port and on a unix socket in that folder, and takes a password over TCP
(so the tests see the URLs a deployment has). initdb and postgres refuse to
run as root; as root they run as the package's ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from vivace.runtime.local_server import free_port

log = logging.getLogger(__name__)

USER, PASSWORD, DATABASE = "vivace", "s3cret-pw", "vivace"
START_TIMEOUT_S = 60


@dataclass
class Postgres:
    """A running private server: its data folder, port and URL."""

    root: Path
    bin: Path
    port: int
    run_as: str | None  # the system user the server runs as (when the tests run as root)

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def log_tail(self, n: int = 3000) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""


def binaries() -> Path | None:
    """The folder with initdb and pg_ctl: the newest Debian package's, else the PATH's (None: not installed)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def _as(user: str | None, argv: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


def _call(user: str | None, argv: list[str], timeout: float = START_TIMEOUT_S) -> None:
    """Run one server tool; its output goes into the error when it fails."""
    proc = subprocess.run(_as(user, argv), capture_output=True, text=True, timeout=timeout, start_new_session=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")


def _run_as() -> str | None:
    """Who the server runs as: ourselves, or (as root) the ``postgres`` user the Debian package made."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("the tests run as root, initdb refuses root, and there is no 'postgres' user "
                           "to run it as (apt-get install postgresql creates one)") from None
    return "postgres"


def start(bin_dir: Path) -> Postgres:
    """initdb in a fresh temporary folder, start the server, create the database; the caller stops it."""
    user = _run_as()
    # Not under pytest's tmp_path: its parents are root-only (0700), and the server's user must reach its folder.
    root = Path(tempfile.mkdtemp(prefix="vivace-pg-"))
    pw_file = root / "pw"
    pw_file.write_text(PASSWORD + "\n")
    if user:
        entry = pwd.getpwnam(user)
        for path in (root, pw_file):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        _call(user, [str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", USER, "-E", "UTF8", "--no-sync",
                     "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pw_file}"])
        server: Postgres | None = None
        for _ in range(3):  # a free port can be taken between the probe and the bind
            candidate = Postgres(root, bin_dir, free_port(), user)
            options = (f"-p {candidate.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB")
            try:
                _call(user, [str(bin_dir / "pg_ctl"), "-D", str(candidate.data), "-l", str(root / "server.log"),
                             "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start"])
            except RuntimeError as exc:
                log.warning("postgres did not start on port %d: %s %s", candidate.port, exc, candidate.log_tail(500))
                continue
            server = candidate
            break
        if server is None:
            raise RuntimeError(f"postgres did not start: {(root / 'server.log').read_text(errors='replace')[-2000:]}")
        _call(user, [str(bin_dir / "createdb"), "-h", str(root), "-p", str(server.port), "-U", USER, DATABASE])
        return server
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def stop(server: Postgres) -> None:
    """A fast shutdown (open sessions are ended), then the folder goes."""
    try:
        _call(server.run_as, [str(server.bin / "pg_ctl"), "-D", str(server.data), "-m", "fast", "-w", "stop"])
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


@contextlib.contextmanager
def running(bin_dir: Path) -> Iterator[Postgres]:
    server = start(bin_dir)
    try:
        yield server
    finally:
        stop(server)
