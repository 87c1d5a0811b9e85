"""`vivace serve` as users reach it: the console script on loopback, the official `openai` SDK as the client.

The fake backend covers the protocol (models, errors, keys, streaming shape,
metrics); the real engine covers SoT and the research pipeline, 32 concurrent
clients, a client that disconnects mid-stream, and Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.serve.conftest import Server, start_server, stop
from tests.helpers import VIVACE, cli_env

def test_models_are_the_modes_agents_and_served_pipelines(fake: Server) -> None:
    ids = [m.id for m in fake.client().models.list()]
    assert ids[:3] == ["vivace-auto", "vivace-sot", "vivace-normal"]
    assert {"research", "sot", "answer", "tidy"} <= set(ids)
    assert httpx.get(f"{fake.url}/health").json()["status"] == "ok"


def test_a_completion_is_the_runs_answer_with_its_record(fake: Server) -> None:
    raw = fake.client().chat.completions.with_raw_response.create(
        model="vivace-normal", messages=[{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Why is the sky blue?"}], max_tokens=32)
    done = raw.parse()
    run_id = raw.headers["x-vivace-run-id"]
    record = fake.run(run_id)
    assert done.id == f"chatcmpl-{run_id}" and done.choices[0].message.content == record["answer"]
    assert record["status"] == "done" and record["question"] == "Why is the sky blue?" and record["mode"] == "normal"
    assert done.usage is not None
    assert done.usage.completion_tokens == record["output_tokens"] and done.usage.prompt_tokens == record["prompt_tokens"]


@pytest.mark.parametrize("model", ["vivace-normal", "vivace-sot", "research", "tidy"])
def test_the_stream_adds_up_to_the_recorded_answer(fake: Server, model: str) -> None:
    with fake.client().chat.completions.with_streaming_response.create(
        model=model, messages=[{"role": "user", "content": "List the benefits of tea."}], max_tokens=48,
        stream=True, stream_options={"include_usage": True},
    ) as response:
        run_id = response.headers["x-vivace-run-id"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    record = fake.run(run_id)
    assert record["status"] == "done" and text == record["answer"] and text.strip()
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == record["output_tokens"]


def test_bad_requests_are_openai_errors(fake: Server) -> None:
    client = fake.client()
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="vivace-auto", messages=[])
    with pytest.raises(openai.BadRequestError, match="last user message is empty"):
        client.chat.completions.create(model="vivace-auto", messages=[{"role": "user", "content": "  "}])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="vivace-auto", messages=[{"role": "user", "content": "hi"}], temperature=-1)
    with pytest.raises(openai.BadRequestError, match="collection 'nosuch' not found"):
        client.chat.completions.create(model="vivace-normal", messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"collection": "nosuch"})
    missing = httpx.get(f"{fake.url}/v1/runs/nosuch")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "run_not_found"


def test_metrics_count_what_the_runs_recorded(fake: Server) -> None:
    before = fake.metric("vivace_runs_total", model="answer", status="done")
    calls_before = fake.metric("vivace_calls_total", agent="answer")
    for _ in range(3):
        fake.client().chat.completions.create(model="answer", messages=[{"role": "user", "content": "Name a fruit."}])
    assert fake.metric("vivace_runs_total", model="answer", status="done") == before + 3
    assert fake.metric("vivace_calls_total", agent="answer") == calls_before + 3
    assert fake.metric("vivace_requests_in_flight") == 0 and fake.metric("vivace_requests_cap") >= 1
    assert fake.metric("vivace_run_seconds_count", model="answer") >= 3


def test_an_api_key_guards_the_api_but_not_health(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--backend", "fake", "--api-key-env", "MY_KEY", env={"MY_KEY": "s3cret"})
    try:
        assert "API key required" in "".join(server.lines)
        with pytest.raises(openai.AuthenticationError):
            server.client("wrong").models.list()
        assert [m.id for m in server.client("s3cret").models.list()][0] == "vivace-auto"
        assert httpx.get(f"{server.url}/health").status_code == 200
    finally:
        code, err = stop(server)
    assert code == 130 and "s3cret" not in err  # the key is never logged


def test_a_taken_port_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([VIVACE, "serve", "--port", str(port)], capture_output=True, text=True,
                             env=cli_env(tmp_path), timeout=60)
    assert out.returncode == 1 and out.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"


# ---------------------------------------------------------------- the real engine (tests/serve/conftest.py)


@pytest.mark.engine
@pytest.mark.parametrize("model", ["vivace-sot", "research"])
def test_sdk_gets_streamed_and_whole_answers_from_the_engine(engine_server: Server, model: str) -> None:
    client = engine_server.client(timeout=600)
    question = [{"role": "user", "content": "What are the main benefits of regular exercise?"}]
    whole = client.chat.completions.with_raw_response.create(model=model, messages=question, max_tokens=96)
    record = engine_server.run(whole.headers["x-vivace-run-id"])
    assert whole.parse().choices[0].message.content == record["answer"] and record["answer"].strip()
    assert record["status"] == "done" and record["backend"] == "vllm" and record["calls"]
    if model == "research":
        assert {c["agent"] for c in record["calls"]} >= {"planner", "researcher", "writer"}
    with client.chat.completions.with_streaming_response.create(model=model, messages=question, max_tokens=96,
                                                                stream=True) as response:
        run_id = response.headers["x-vivace-run-id"]
        pieces = [c.choices[0].delta.content or "" for c in response.parse() if c.choices]
    streamed = engine_server.run(run_id)
    assert "".join(pieces) == streamed["answer"] and streamed["status"] == "done"
    if model == "vivace-sot" and streamed["mode"] == "sot":
        # The points go out as each one (and those before it) is done, formatted as the answer joins them. The
        # length plan's equal budgets end them together, so they may arrive in one chunk; tests/serve/test_stream.py
        # checks the order of points finishing apart.
        assert next(p for p in pieces if p).startswith("1. ")


@pytest.mark.engine
def test_thirty_two_concurrent_clients_all_complete(engine_server: Server) -> None:
    before = engine_server.metric("vivace_runs_total", model="vivace-normal", status="done")

    async def one(client: openai.AsyncOpenAI, i: int) -> str:
        raw = await client.chat.completions.with_raw_response.create(
            model="vivace-normal", messages=[{"role": "user", "content": f"Say a word about the number {i}."}],
            max_tokens=12)
        assert raw.parse().choices[0].message.content.strip()
        return raw.headers["x-vivace-run-id"]

    async def all_of_them() -> list[str]:
        async with engine_server.aclient(timeout=600) as client:
            return await asyncio.gather(*(one(client, i) for i in range(32)))

    run_ids = asyncio.run(all_of_them())
    assert len(set(run_ids)) == 32
    records = [engine_server.run(r) for r in run_ids]
    assert all(r["status"] == "done" and r["answer"].strip() for r in records)
    assert engine_server.metric("vivace_runs_total", model="vivace-normal", status="done") == before + 32
    # They shared one cap of 8: some waited for it, and the wait is in their calls' queue time.
    assert max(c["queue_s"] for r in records for c in r["calls"]) > 0
    assert engine_server.metric("vivace_requests_in_flight") == 0


@pytest.mark.engine
def test_a_client_that_disconnects_mid_stream_stops_its_run(engine_server: Server) -> None:
    client = engine_server.client(timeout=600)
    with client.chat.completions.with_streaming_response.create(
        model="vivace-normal", messages=[{"role": "user", "content": "Write a very long story about a dragon."}],
        max_tokens=256, stream=True,
    ) as response:
        run_id = response.headers["x-vivace-run-id"]
        got = ""
        for chunk in response.parse():
            got += (chunk.choices[0].delta.content or "") if chunk.choices else ""
            if len(got.split()) >= 3:
                break  # leaving the block closes the connection
    deadline = time.time() + 60
    record: dict[str, Any] = {}
    while time.time() < deadline:
        record = engine_server.run(run_id)
        if "status" in record:
            break
        time.sleep(0.2)
    assert record.get("status") == "interrupted", record
    assert got.strip()[:10] in record["answer"] and record["calls"] == []  # the call never finished
    while time.time() < deadline and engine_server.metric("vivace_engine_running_requests") > 0:
        time.sleep(0.2)
    assert engine_server.metric("vivace_engine_running_requests") == 0  # aborted at the engine, not left to finish
    assert engine_server.metric("vivace_runs_total", model="vivace-normal", status="interrupted") >= 1


def test_the_concurrent_clients_example_reports_every_run(fake: Server) -> None:
    import sys

    out = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[2] / "examples" / "serve_clients.py"),
                          "--base-url", f"{fake.url}/v1", "--model", "vivace-normal", "--clients", "8",
                          "--max-tokens", "16"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["clients"] == 8 and report["runs_done"] == 8 and report["output_tokens"] > 0
    assert 0 < report["p50_s"] <= report["p95_s"] <= report["wall_s"]
