"""Faults injected where they happen, against the real parts: each run ends with a clear status and keeps what was done.

Engine faults use the session's real engine; server faults a real vLLM server on loopback that the
test kills; ingest faults real `vivace ingest` processes. No timing thresholds: only what is kept.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

from tests.helpers import VIVACE, cli_env, read_until
from vivace.agents.driver import ask
from vivace.assembly import runtime_for
from vivace.config import Config
from vivace.errors import RunError
from vivace.runtime.fake import FakeBackend

QUESTION = "What are the main benefits of regular exercise?"


def records(home: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (home / "runs" / "runs.jsonl").read_text().splitlines()]


@pytest.mark.engine
def test_every_branch_timing_out_fails_the_run_and_keeps_the_skeleton(engine: Any, run: Callable[..., Any],
                                                                      tmp_path: Path) -> None:
    runtime = runtime_for(Config(home=tmp_path, max_tokens=128), engine)
    with pytest.raises(RunError, match="point expansions failed") as info:
        run(ask(QUESTION, runtime, mode="sot", branch_timeout_s=0.001))
    trace = info.value.trace
    assert trace.status == "failed" and [c.node for c in trace.calls] == ["skeleton"]
    assert all("timed out" in why for why in trace.sot["failed_points"].values())
    saved = records(tmp_path)[-1]
    assert saved["run_id"] == trace.run_id and saved["status"] == "failed" and saved["calls"][0]["node"] == "skeleton"


@pytest.mark.engine
def test_a_request_aborted_at_the_engine_ends_the_run_with_its_text_so_far(engine: Any, run: Callable[..., Any],
                                                                           tmp_path: Path) -> None:
    runtime = runtime_for(Config(home=tmp_path, max_tokens=2000), engine)
    streamed: list[str] = []

    async def go() -> Any:
        task = asyncio.ensure_future(ask("Write a very long story about a lighthouse keeper.", runtime, mode="normal",
                                         on_event=lambda e: streamed.append(e.kind)))
        while streamed.count("answer_delta") < 5:
            await asyncio.sleep(0.05)
        await engine.abort_all()
        try:
            return await task
        except RunError as exc:
            return exc.trace

    trace = run(go())
    saved = records(tmp_path)[-1]
    assert saved["run_id"] == trace.run_id and saved["status"] == trace.status
    if trace.status == "failed":  # the engine's abort surfaces as an error naming it
        assert trace.error and trace.answer.strip()  # the text streamed before the abort
    else:  # vLLM may also close an aborted stream as finished: then the call ended short, and says so
        assert trace.calls[0].finish_reason in ("abort", "stop", "length") and trace.calls[0].output_tokens < 2000


def test_a_full_disk_for_the_trace_file_keeps_the_run_and_its_record(tmp_path: Path) -> None:
    out = subprocess.run([VIVACE, "ask", "Why is tea popular?", "--backend", "fake", "--json", "--trace-out", "/dev/full"],
                         capture_output=True, text=True, env=cli_env(tmp_path), timeout=300)
    assert out.returncode in (0, 1) and "Traceback" not in out.stderr
    if out.returncode == 0:  # the answer stands; the failed copy is said in one line
        assert json.loads(out.stdout.strip().splitlines()[-1])["status"] == "done"
        assert "No space left on device" in " ".join(out.stderr.split())  # one log line, wrapped by the terminal width
    assert records(tmp_path)[-1]["status"] == "done"  # runs.jsonl holds the run whatever happened to the copy


def _corpus(folder: Path, files: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        sentences = " ".join(f"Record {i}.{j}: the harbour ledger notes cargo {i * 31 + j} in crate {j}." for j in range(40))
        (folder / f"doc{i:02d}.md").write_text(sentences)
    return folder


def _count(home: Path, name: str) -> int:
    from vivace.retrieval.store import Store

    return Store(Config(home=home)).collection(name).count()


# `vivace ingest`, with a line on stderr after each batch it stored before the last: a pipe shows no progress bar.
INGEST_PROGRESS_CLI = """
import sys
from vivace.retrieval.store import Store
ingest = Store.ingest

def reporting(self, *args, **kw):
    shown = kw["progress"] if "progress" in kw else args[5]

    def progress(done, total):
        shown(done, total)
        if 0 < done < total:
            print(f"test: embedded {done} of {total}", file=sys.stderr, flush=True)

    if "progress" in kw:
        kw["progress"] = progress
    else:
        args = (*args[:5], progress, *args[6:])
    return ingest(self, *args, **kw)

Store.ingest = reporting
from vivace.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_during_ingest_then_a_rerun_completes_it(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus")
    clean_home, home = tmp_path / "clean", tmp_path / "killed"
    ok = subprocess.run([VIVACE, "ingest", str(corpus), "--collection", "ledger"], capture_output=True, text=True,
                        env=cli_env(clean_home), timeout=600)
    assert ok.returncode == 0, ok.stderr
    proc = subprocess.Popen([sys.executable, "-c", INGEST_PROGRESS_CLI, "ingest", str(corpus), "--collection", "ledger"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(home),
                            start_new_session=True)
    assert proc.stderr is not None
    try:  # killed mid-embedding: some batches are in the store, not all
        read_until(proc.stderr, lambda line: line.startswith("test: embedded "))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert 0 < _count(home, "ledger") < _count(clean_home, "ledger")
    again = subprocess.run([VIVACE, "ingest", str(corpus), "--collection", "ledger"], capture_output=True, text=True,
                           env=cli_env(home), timeout=600)
    assert again.returncode == 0, again.stderr
    assert _count(home, "ledger") == _count(clean_home, "ledger") > 0


def test_two_concurrent_ingests_of_one_folder_store_each_chunk_once(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus", files=20)
    home, clean = tmp_path / "home", tmp_path / "clean"
    procs = [subprocess.Popen([VIVACE, "ingest", str(corpus), "--collection", "ledger"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=cli_env(home)) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1][-500:] for r in results]
    subprocess.run([VIVACE, "ingest", str(corpus), "--collection", "ledger"], check=True, capture_output=True,
                   env=cli_env(clean), timeout=600)
    assert _count(home, "ledger") == _count(clean, "ledger") > 0


def _server_pids(url: str) -> list[int]:
    port = int(url.rsplit(":", 1)[1])
    pids = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            pids.append(conn.pid)
    return pids


@pytest.mark.engine
def test_a_server_killed_mid_stream_fails_the_run_and_keeps_its_text(api_server: str, run: Callable[..., Any],
                                                                     tmp_path: Path) -> None:
    """Last test of this module: it kills the module's server."""
    from vivace.runtime.openai_http import OpenAIBackend

    streamed: list[str] = []

    async def go() -> Any:
        backend = await OpenAIBackend.connect([api_server], retries=1)
        runtime = runtime_for(Config(home=tmp_path, backend="openai", max_tokens=1500), backend)
        try:
            task = asyncio.ensure_future(ask("Write a very long story about a lighthouse keeper.", runtime,
                                             mode="normal", on_event=lambda e: streamed.append(e.kind)))
            while streamed.count("answer_delta") < 5:
                await asyncio.sleep(0.05)
            for pid in _server_pids(api_server):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            with pytest.raises(RunError) as info:
                await task
            return info.value
        finally:
            await runtime.aclose()

    error = run(go())
    assert error.exit_code == 1 and error.trace.status == "failed"
    assert error.trace.answer.strip()  # what the server sent before it died
    assert records(tmp_path)[-1]["status"] == "failed"


@pytest.mark.engine
def test_a_hundred_concurrent_tasks_through_the_cap(engine: Any, run: Callable[..., Any], tmp_path: Path) -> None:
    """No deadlock, no lost record, the cap never exceeded (the time is a benchmark: `vivace bench load`)."""
    runtime = runtime_for(Config(home=tmp_path, max_tokens=8, max_in_flight=8), engine)
    runtime.limiter.reset_peak()

    async def go() -> list[Any]:
        return await asyncio.gather(*(run_one(i) for i in range(100)))

    async def run_one(i: int) -> Any:
        return await ask(f"Name one use of item number {i}.", runtime, mode="normal")

    traces = run(go(), timeout=900)
    assert len(traces) == 100 and all(t.status == "done" and t.calls for t in traces)
    assert runtime.limiter.peak == 8 and runtime.limiter.in_flight == 0
    saved = records(tmp_path)
    assert len(saved) == 100 and len({r["run_id"] for r in saved}) == 100


def test_a_branch_that_raises_is_marked_and_the_others_kept(tmp_path: Path) -> None:
    def respond(request: Any) -> str:
        if request.tag.endswith("/skeleton"):
            return " Water\n2. Leaves\n3. Time"
        if request.tag.endswith("/expand/2"):
            raise RuntimeError("branch 2 broke")
        return ": fine."

    runtime = runtime_for(Config(home=tmp_path), FakeBackend(respond))
    trace = asyncio.run(ask("How do I make tea?", runtime, mode="sot"))
    assert trace.status == "done" and "point 2 failed: branch 2 broke" in (trace.error or "")
    assert sorted(c.branch for c in trace.calls if c.node == "expand") == [1, 3]
    assert records(tmp_path)[-1]["error"] == trace.error


@pytest.mark.parametrize("body", [b"<html>oops</html>", b'["smollm2"]', b'{"data": [{"object": "model"}]}'],
                         ids=["garbage", "a-json-list", "no-id"])
def test_a_server_that_answers_garbage_is_one_line(tmp_path: Path, body: bytes) -> None:
    """`/v1/models` answering something that is not a model list: one line, exit 1, no traceback."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Garbage(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = subprocess.run([VIVACE, "ask", "hi", "--backend", "openai", "--base-url", f"http://127.0.0.1:{server.server_port}"],
                             capture_output=True, text=True, env=cli_env(tmp_path), timeout=120)
    finally:
        server.shutdown()
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 1 and lines[-1].startswith("error: ") and "--debug" not in out.stderr, out.stderr
    assert "/v1/models" in lines[-1] and "Traceback" not in out.stderr
