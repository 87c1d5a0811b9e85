"""Two `vivace serve` replicas, one PostgreSQL, one vLLM server: a run survives the replica that ran it.

The deployment the design names (stateless replicas over one PostgreSQL, the
model behind vLLM's own server), on loopback: both replicas use the module's
real vLLM OpenAI server (``api_server``) and the session's private PostgreSQL
(``postgres_url``), each with a home of its own, so whatever one replica
knows of another's run came through the database. A pipeline started on
replica A is SIGKILLed once a step is checkpointed; replica B sees it killed
and finishes it without running that step again. A paused run started on A
shows its pending approval on B and finishes there once approved. The
endpoints' input checks and conversations run on the package's fake server.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.serve.conftest import Server, stop
from tests.helpers import VIVACE, cli_env, default_signals, wait_for
from vivace.runtime.checkpoints import RunStore
from vivace.serve import RUN_HEADER

RESEARCH = """
name = "digest"
edges = [["plan", "research"], ["research", "write"]]
[steps]
plan = "planner"
research = { agent = "researcher", fan_out = true, max_branches = 3 }
write = "writer"
"""

GATED = """
name = "reviewed"
edges = [["draft", "publish"]]
[steps]
draft = "answer"
publish = { agent = "writer", requires_approval = true }
"""

START_TIMEOUT_S = 120


def replica(home: Path, model_url: str, checkpoint_url: str, pipelines: list[Path]) -> Server:
    """A `vivace serve` process on the shared model server and database; returns once it listens."""
    args = [VIVACE, "serve", "--port", "0", "--backend", "openai", "--base-url", model_url, "--max-tokens", "64"]
    for path in pipelines:
        args += ["--pipeline", str(path)]
    env = {**cli_env(home), "VIVACE_CHECKPOINT_URL": checkpoint_url, "VIVACE_SERVE_API_KEY": ""}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, preexec_fn=default_signals)  # noqa: PLW1509 - no threads yet
    watchdog = threading.Timer(START_TIMEOUT_S, proc.kill)  # a server that never says it listens is not waited on
    watchdog.start()
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if found := re.search(r"serving on (http://\S+?)/v1 .*Ctrl-C stops", line):
                return Server(proc, found.group(1), lines)
    finally:
        watchdog.cancel()
    proc.kill()
    raise AssertionError(f"vivace serve did not start: {''.join(lines)[-2000:]}")


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("durable-pipelines")  # one path both replicas see: the header names the file
    out = []
    for name, text in (("digest", RESEARCH), ("reviewed", GATED)):
        (folder / f"{name}.toml").write_text(text)
        out.append(folder / f"{name}.toml")
    return out


@pytest.fixture
def replicas(api_server: str, postgres_url: str, pipelines: list[Path], tmp_path: Path) -> Iterator[list[Server]]:
    """Replicas A and B; a test may SIGKILL A (B is stopped as a terminal's Ctrl-C stops it)."""
    started: list[Server] = []
    try:
        for name in ("a", "b"):
            started.append(replica(tmp_path / name, api_server, postgres_url, pipelines))
        yield started
    finally:
        for server in started:
            if server.proc.poll() is None:
                code, err = stop(server)
                assert code == 130 and "Traceback" not in err, err[-3000:]


def get_run(server: Server, run_id: str) -> dict[str, Any] | None:
    """The run as ``server`` tells it (None: it does not know it yet)."""
    resp = httpx.get(f"{server.url}/v1/runs/{run_id}", timeout=30)
    if resp.status_code == 404:
        return None
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def resume_on(server: Server, run_id: str, **body: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/runs/{run_id}/resume", json=body or None, timeout=300)


def chat(model: str, question: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": question}], "stream": True}


@pytest.mark.engine
def test_a_run_whose_replica_is_sigkilled_is_finished_by_the_other_without_its_finished_steps(
        replicas: list[Server], postgres_url: str) -> None:
    a, b = replicas
    body = chat("digest", "How do honey bees find their way back to the hive?")
    with httpx.stream("POST", f"{a.url}/v1/chat/completions", json=body, timeout=300) as resp:
        assert resp.status_code == 200
        run_id = resp.headers[RUN_HEADER]  # sent before the first token
        running = wait_for("a finished step in the store, seen from replica B",
                           lambda: (r := get_run(b, run_id)) and r["status"] == "running" and r["saved_steps"] and r)
        os.killpg(a.proc.pid, signal.SIGKILL)  # no finally, no goodbye: its database session dies with it
        a.proc.wait(timeout=30)
    saved = set(running["saved_steps"])
    assert "plan.0" in saved and running["agent"] == "digest" and running["question"] == body["messages"][0]["content"]
    killed = wait_for("replica B to see the run killed", lambda: (r := get_run(b, run_id)) and r["status"] == "killed" and r)
    assert set(killed["saved_steps"]) >= saved

    resp = resume_on(b, run_id)
    assert resp.status_code == 200, resp.text
    record = resp.json()
    assert record["status"] == "done" and record["answer"].strip()
    assert record["meta"]["resumed_from"] == run_id and resp.headers[RUN_HEADER] == record["run_id"]
    resumed = set(record["meta"]["resumed_steps"])
    assert resumed >= saved and resumed == set(killed["saved_steps"])
    # what the checkpoint held was not run again: no calls of those steps in the new record
    assert "plan" not in {c["node"] for c in record["calls"]}
    assert all(s["calls"] == 0 for s in record["steps"] if s.get("key") in resumed)
    assert any(c["node"] == "write" for c in record["calls"])
    after = get_run(b, run_id)
    assert after is not None and after["status"] == "resumed" and after["resumed_by"] == record["run_id"]
    assert get_run(b, record["run_id"]) == record  # the new run's record, kept by the replica that ran it
    listed = httpx.get(f"{b.url}/v1/runs", params={"limit": 20}, timeout=30).json()["data"]
    statuses = {r["run_id"]: r["status"] for r in listed}
    assert statuses[run_id] == "resumed" and statuses[record["run_id"]] == "done"
    again = resume_on(b, run_id)
    assert again.status_code == 400 and "already resumed" in again.json()["error"]["message"]


@pytest.mark.engine
def test_a_paused_run_shows_its_approval_on_the_other_replica_and_finishes_there(
        replicas: list[Server], postgres_url: str) -> None:
    a, b = replicas
    resp = httpx.post(f"{a.url}/v1/chat/completions", json={**chat("reviewed", "Write a note on tides."),
                                                               "stream": False}, timeout=300)
    assert resp.status_code == 200, resp.text
    run_id = resp.headers[RUN_HEADER]
    seen = get_run(b, run_id)  # B never ran it: this is the store's view
    assert seen is not None and seen["status"] == "paused", seen
    assert seen["pending_approval"] == {"key": "publish.0", "kind": "step", "step": "publish",
                                        "what": "run step 'publish' (agent writer)"}
    assert seen["saved_steps"] == ["draft.0"] and not any(c["node"] == "publish" for c in seen["calls"])

    holder = RunStore.open(postgres_url, Path("/nonexistent"), 1000)  # another replica resuming it right now
    try:
        assert asyncio.run(holder.claim(run_id))
        held = resume_on(b, run_id, approve="all")
        assert held.status_code == 409 and held.json()["error"]["code"] == "run_busy", held.text
    finally:
        asyncio.run(holder.aclose())  # its session ends: the run is free again
    resp = resume_on(b, run_id, approve="all")
    assert resp.status_code == 200, resp.text
    record = resp.json()
    assert record["status"] == "done" and record["meta"]["resumed_steps"] == ["draft.0"]
    assert [c["node"] for c in record["calls"]] == ["publish"]  # the draft was not written again
    on_a = get_run(a, run_id)
    assert on_a is not None and on_a["status"] == "resumed"  # A's memory said paused: the store says what came next



def test_the_run_endpoints_refuse_bad_input_and_a_thread_continues_across_requests(fake: Server) -> None:
    thread = f"serve-{os.urandom(4).hex()}"

    def ask(question: str) -> dict[str, Any]:
        resp = httpx.post(f"{fake.url}/v1/chat/completions", json={**chat("writer", question), "stream": False,
                                                                   "thread": thread}, timeout=60)
        assert resp.status_code == 200, resp.text
        return fake.run(resp.headers[RUN_HEADER])

    first, second = ask("My name is Ada."), ask("What is my name?")
    assert first["thread"]["turns"] == 0 and second["thread"]["turns"] == 1
    assert second["prompt_tokens"] > first["prompt_tokens"]  # the earlier turn went into the prompt
    listed = httpx.get(f"{fake.url}/v1/runs", params={"limit": 2}, timeout=30).json()["data"]
    assert [r["run_id"] for r in listed] == [second["run_id"], first["run_id"]]
    assert all(r["status"] == "done" for r in listed)
    cases = [(httpx.get(f"{fake.url}/v1/runs", params={"limit": 0}, timeout=30), 400, "limit"),
             (resume_on(fake, first["run_id"]), 400, "finished (done)"),
             (resume_on(fake, "0123456789ab"), 400, "no run '0123456789ab'"),
             (resume_on(fake, first["run_id"], approve="maybe"), 400, "approve"),
             (httpx.post(f"{fake.url}/v1/chat/completions", json={**chat("writer", "hi"), "thread": " ", "stream": False},
                         timeout=30),
              400, "thread id")]
    for resp, status, fragment in cases:
        assert resp.status_code == status and fragment in resp.json()["error"]["message"], resp.text
