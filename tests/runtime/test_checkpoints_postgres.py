"""The run store on a real PostgreSQL (``postgres_url``): what replicas sharing one database rely on.

Each test opens two runtimes on the same database, as two ``vivace serve``
replicas would: a run failed on one is resumed on the other without its
finished steps running again; two resumes of one run, one wins; a run held by
a process is ``running`` to the others until that process dies, then
``killed``. The fake stands in for the model only (orchestration logic).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.agents.fakes import failing_writer, steps_of
from tests.helpers import cli, one_line, wait_for
from vivace.agents.builtin import research_pipeline
from vivace.agents.driver import resolve, run
from vivace.agents.resume import resume
from vivace.assembly import runtime_for
from vivace.config import Config
from vivace.errors import BackendError, BusyError, RunError
from vivace.runtime.checkpoints import RunStore
from vivace.runtime.fake import FakeBackend
from vivace.runtime.local_server import free_port
from vivace.trace import RunTrace

# A process that begins a run in the store and holds it until it is killed (as a replica mid-run).
HOLDER = """
import asyncio, sys
from pathlib import Path
from vivace.runtime.checkpoints import RunStore

async def main() -> None:
    store = RunStore.open(sys.argv[1], Path(sys.argv[2]), 1000)
    await store.begin(sys.argv[3], {"task": "held"}, {"agent": "held", "task": "held"})
    print("held", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def runtime(home: Path, url: str, backend: Any) -> Any:
    return runtime_for(Config(backend="fake", max_tokens=64, home=home, checkpoint_url=url), backend)


def test_a_run_failed_on_one_replica_resumes_on_another_without_its_finished_steps(
        postgres_url: str, tmp_path: Path) -> None:
    fail = {"write": True}
    first_backend, second_backend = FakeBackend(failing_writer(fail)), FakeBackend(failing_writer(fail))

    async def go() -> tuple[Any, Any, Any, Any]:
        a, b = runtime(tmp_path / "a", postgres_url, first_backend), runtime(tmp_path / "b", postgres_url, second_backend)
        try:
            with pytest.raises(RunError) as err:
                await run(resolve("research"), "How do bees fly?", a)  # as a server resolves a model name
            first = err.value.trace
            assert isinstance(first, RunTrace)
            seen = b.checkpoints().load_now(first.run_id)  # the other replica reads the same run
            fail["write"] = False
            second = await resume(first.run_id, b)
            return first, seen, second, a.checkpoints().load_now(first.run_id)
        finally:
            await a.aclose()
            await b.aclose()

    first, seen, second, after = asyncio.run(go())
    assert first.status == "failed" and seen is not None and seen.status == "failed"
    assert sorted(seen.steps) == ["plan.0", "research.0.1", "research.0.2", "research.0.3"]
    assert seen.record is not None and seen.record["run_id"] == first.run_id
    assert second.status == "done" and second.meta["resumed_from"] == first.run_id
    assert sorted(second.meta["resumed_steps"]) == sorted(seen.steps)
    # the second replica's model saw only the steps that had not finished
    assert [r.tag.split("/")[1] for r in second_backend.requests] == ["write", "review"]
    assert steps_of(second.calls) == ["review", "write"]
    assert after.status == "resumed" and after.meta["resumed_by"] == second.run_id
    assert second.checkpoint["store"] == "postgres"


def test_two_replicas_resume_one_run_and_one_wins(postgres_url: str, tmp_path: Path) -> None:
    fail = {"write": True}

    async def go() -> list[Any]:
        a = runtime(tmp_path / "a", postgres_url, FakeBackend(failing_writer(fail), latency_s=0.2))
        b = runtime(tmp_path / "b", postgres_url, FakeBackend(failing_writer(fail), latency_s=0.2))
        try:
            with pytest.raises(RunError) as err:
                await run(research_pipeline(), "What is rust?", a)
            fail["write"] = False
            assert isinstance(err.value.trace, RunTrace)
            run_id = err.value.trace.run_id
            return list(await asyncio.gather(resume(run_id, a, target=research_pipeline()),
                                             resume(run_id, b, target=research_pipeline()), return_exceptions=True))
        finally:
            await a.aclose()
            await b.aclose()

    results = asyncio.run(go())
    assert sum(isinstance(r, BusyError) for r in results) == 1, results
    assert sum(getattr(r, "status", None) == "done" for r in results) == 1, results


def test_a_held_run_is_running_to_others_and_killed_once_its_process_dies(postgres_url: str, tmp_path: Path) -> None:
    run_id = os.urandom(6).hex()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, postgres_url, str(tmp_path), run_id],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    store = RunStore.open(postgres_url, tmp_path, 1000)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "held", proc.stderr.read() if proc.stderr else ""
        held = store.load_now(run_id)
        assert held is not None and held.status == "running" and held.header == {"task": "held"}
        assert [r["status"] for r in store.runs(1000) if r["run_id"] == run_id] == ["running"]
        assert not asyncio.run(store.claim(run_id))  # nobody else can take it while its holder lives
        os.killpg(proc.pid, signal.SIGKILL)  # no finally, no goodbye: the server sees the connection drop
        proc.wait(timeout=30)
        killed = wait_for("the run to show as killed", lambda: (s := store.load_now(run_id)) and s.status == "killed")
        assert killed
        assert [r["status"] for r in store.runs(1000) if r["run_id"] == run_id] == ["killed"]
        asyncio.run(store.mark(run_id, "resumed", resumed_by="another-run"))  # as a resume on this replica ends
        resumed = store.load_now(run_id)
        assert resumed is not None and resumed.status == "resumed" and resumed.meta["resumed_by"] == "another-run"
        assert resumed.header == {"task": "held"}  # a killed run has no last checkpoint: the mark is its header's child
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        asyncio.run(store.aclose())


@pytest.mark.parametrize("which", ["unreachable", "wrong password"])
def test_an_unusable_postgresql_is_one_backend_error_line_without_the_password(
        postgres_url: str, tmp_path: Path, which: str) -> None:
    secret = "hunter2-not-this"
    if which == "unreachable":
        url = f"postgresql://vivace:{secret}@127.0.0.1:{free_port()}/vivace"
    else:
        url = postgres_url.replace(postgres_url.split(":")[2].split("@")[0], secret)
    with pytest.raises(BackendError) as err:
        RunStore.open(url, tmp_path, 1000)
    message = str(err.value)
    assert "\n" not in message and secret not in message and "***" in message, message
    out = cli("runs", "list", home=tmp_path / "home", cwd=tmp_path, env={"VIVACE_CHECKPOINT_URL": url})
    line = one_line(out, 1, "checkpoint database")
    assert secret not in out.stderr + out.stdout, line


def test_a_threads_turns_written_by_one_replica_reach_the_other(postgres_url: str, tmp_path: Path) -> None:
    thread = f"pg-{os.urandom(4).hex()}"
    backend = FakeBackend(lambda request: f"answer {len(request.messages)}")

    async def go() -> tuple[list[dict[str, Any]], Any]:
        a, b = runtime(tmp_path / "a", postgres_url, backend), runtime(tmp_path / "b", postgres_url, backend)
        try:
            first = await run("writer", "My name is Ada.", a, thread=thread)
            second = await run("writer", "What is my name?", b, thread=thread)
            assert second.thread["turns"] == 1
            assert {"role": "assistant", "content": first.answer} in backend.requests[-1].messages
            return await a.checkpoints().turns(thread), b.checkpoints().load_now(second.run_id)
        finally:
            await a.aclose()
            await b.aclose()

    turns, stored = asyncio.run(go())
    assert [t["user"] for t in turns] == ["My name is Ada.", "What is my name?"]
    assert stored.status == "done" and stored.record is not None and stored.record["answer"] == stored.meta["answer"]
