"""The openai backend against servers that behave like hosted APIs, or badly: strict fields, no prefill,
a `/v1` base URL, a server that ignores max_tokens, one that is too slow, and a 200 that is no completion.

The strict server fronts the real vLLM api_server (tests/runtime/servers.py), so the answers are the
embedded model's; only what the server accepts changes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.runtime import servers
from tests.helpers import VIVACE, cli_env


def vivace(home: Path, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VIVACE, *args], capture_output=True, text=True, env={**cli_env(home), **env},
                          timeout=timeout)


@pytest.fixture(scope="module")
def strict(api_server: str) -> Iterator[servers.Running]:
    yield from servers.running(servers.strict_app(api_server))


@pytest.fixture(scope="module")
def trickle() -> Iterator[servers.Running]:
    yield from servers.running(servers.trickle_app(delay=0.01))


@pytest.fixture(scope="module")
def slow() -> Iterator[servers.Running]:
    yield from servers.running(servers.trickle_app(delay=1.0))


@pytest.fixture(scope="module")
def garbage() -> Iterator[servers.Running]:
    yield from servers.running(servers.garbage_app())


def record(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.engine
@pytest.mark.parametrize("mode, suffix", [("sot", "/v1"), ("auto", ""), ("normal", "/v1/")])
def test_ask_works_against_a_strict_server(strict: servers.Running, tmp_path: Path, mode: str, suffix: str) -> None:
    before = len(strict.app.state.seen)
    out = vivace(tmp_path, "ask", "Name three rivers and say where each flows.", "--backend", "openai",
                 "--base-url", strict.url + suffix, "--mode", mode, "--max-tokens", "96", "--json")
    run = record(out)
    assert run["status"] == "done" and run["answer"].strip() and run["backend"] == "openai"
    sent = strict.app.state.seen[before:]
    assert len(sent) == len(run["calls"]) >= 1  # every call went out, and none with a vendor field
    assert all(set(fields) <= servers.STANDARD_FIELDS for fields in sent)
    if run["mode"] == "sot":  # the skeleton's prefill became an instruction, and its echo was cut
        skeleton = next(c for c in run["calls"] if c["node"].endswith("skeleton"))
        assert skeleton["output_tokens"] > 0 and len(run["points"]) >= 2


@pytest.mark.engine
def test_research_runs_against_a_strict_server(strict: servers.Running, tmp_path: Path) -> None:
    out = vivace(tmp_path, "run", "research", "Compare trains and buses for commuting.", "--backend", "openai",
                 "--base-url", strict.url + "/v1", "--max-tokens", "64", "--max-branches", "2", "--max-rounds", "0",
                 "--json")
    run = record(out)
    assert run["status"] == "done" and run["answer"].strip()
    assert {c["agent"] for c in run["calls"]} >= {"planner", "researcher", "writer"}


def test_a_server_that_ignores_max_tokens_is_cut_off(trickle: servers.Running, tmp_path: Path) -> None:
    out = vivace(tmp_path, "ask", "hi", "--backend", "openai", "--base-url", trickle.url, "--mode", "normal",
                 "--max-tokens", "16", "--json", timeout=120)
    run = record(out)
    (call,) = run["calls"]
    assert call["finish_reason"] == "length" and call["output_tokens"] == 16  # one token at least per chunk
    assert run["answer"].split() == [f"tok{i}" for i in range(16)]
    assert "ignored max_tokens=16; cut off on the client" in " ".join(out.stderr.split())


def test_every_call_has_a_deadline(slow: servers.Running, tmp_path: Path) -> None:
    out = vivace(tmp_path, "ask", "hi", "--backend", "openai", "--base-url", slow.url, "--mode", "normal",
                 "--max-tokens", "400", timeout=120, VIVACE_REQUEST_TIMEOUT_S="3")
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1].endswith(f"{slow.url}: no complete answer within 3 s")
    assert "Traceback" not in out.stderr


def test_a_200_without_a_completion_is_an_error(garbage: servers.Running, tmp_path: Path) -> None:
    out = vivace(tmp_path, "ask", "hi", "--backend", "openai", "--base-url", garbage.url, "--mode", "normal",
                 "--json", timeout=120)
    assert out.returncode == 1 and not out.stdout.strip(), out.stdout
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and garbage.url in last and "Traceback" not in out.stderr
    saved = json.loads((tmp_path / "runs" / "runs.jsonl").read_text().splitlines()[-1])
    assert saved["status"] == "failed" and garbage.url in saved["error"]


def chunk(text: str | None = None, finish: str | None = None) -> Any:
    from types import SimpleNamespace

    delta = SimpleNamespace(content=text)
    return SimpleNamespace(usage=None, choices=[SimpleNamespace(delta=delta, finish_reason=finish)])


def reply_of(pieces: list[str], *, prefill: str | None = None, stop: tuple[str, ...] = (), max_tokens: int = 64) -> Any:
    import asyncio

    from vivace.runtime.backend import GenerationRequest, Timer
    from vivace.runtime.openai_reply import Reply

    request = GenerationRequest([{"role": "user", "content": "q"}], prefill=prefill, stop=list(stop),
                                max_tokens=max_tokens)
    reply = Reply(request, prefill, Timer(), asyncio.Queue())
    ended = False
    for p in pieces:
        if reply.take(chunk(p)):
            ended = True
            break
    return reply, ended


def test_a_prefill_the_model_echoes_is_cut_across_chunks() -> None:
    reply, _ = reply_of(["\n1", ".", " Plan meals\n2. Compare", " prices"], prefill="1.")
    assert "".join(reply.parts) == " Plan meals\n2. Compare prices"
    reply, _ = reply_of(["Plan meals\n2. Compare prices"], prefill="1.")  # not echoed: kept whole
    assert "".join(reply.parts) == "Plan meals\n2. Compare prices"
    reply, _ = reply_of(["1"], prefill="1. Cardio:")  # the stream ended inside what might have been the echo
    assert reply.result("openai", "m").text == "1"


def test_stop_strings_apply_on_the_client_even_across_chunks() -> None:
    reply, ended = reply_of(["Boil water.", "\n", "\nThen steep."], stop=("\n\n",))
    assert ended and "".join(reply.parts) == "Boil water.\n" and reply.finish == "stop"


def test_more_text_chunks_than_max_tokens_end_the_answer() -> None:
    reply, ended = reply_of([f"w{i} " for i in range(10)], max_tokens=4)
    assert ended and reply.overflow and reply.finish == "length" and "".join(reply.parts) == "w0 w1 w2 w3 "


def test_a_request_rate_paces_each_server_and_counts_as_queue_time(trickle: servers.Running, run: Any) -> None:
    import asyncio

    from vivace.runtime.backend import GenerationRequest
    from vivace.runtime.call import CallPath
    from vivace.runtime.openai_http import OpenAIBackend

    async def three() -> list[Any]:
        backend = await OpenAIBackend.connect([trickle.url], requests_per_minute=60)  # one a second
        try:
            path = CallPath(backend)
            return await asyncio.gather(*(path.send(GenerationRequest([{"role": "user", "content": "hi"}],
                                                                      max_tokens=2)) for _ in range(3)))
        finally:
            await backend.aclose()

    results = run(three())
    # When each request passed the throttle: its start plus its wait, which the result records as queue time.
    passed = sorted(r.started_at + r.queue_s for r in results)
    assert all(b - a >= 0.9 for a, b in zip(passed, passed[1:])), passed  # unpaced, they would be ms apart
    assert max(r.queue_s for r in results) >= 1.0  # started together, the last one waited its turn twice
