"""OpenAIBackend against a real vLLM api_server on 127.0.0.1 (see conftest.api_server)."""

import asyncio
import logging

import pytest

from vivace.errors import BackendError, InputError
from vivace.runtime import Delta, GenerationRequest, GenerationResult, complete
from vivace.runtime.openai_http import OpenAIBackend

from tests.helpers import continued_prompt_tokens, free_port

pytestmark = pytest.mark.engine


def _ask(text: str, **kw) -> GenerationRequest:
    kw.setdefault("max_tokens", 32)
    kw.setdefault("repetition_penalty", 1.15)
    return GenerationRequest(messages=[{"role": "user", "content": text}], **kw)


def test_streams_and_reports_usage(api_server, run) -> None:
    async def go():
        backend = await OpenAIBackend.connect([api_server])
        try:
            events = [e async for e in backend.generate(_ask("What is the capital of France?"))]
            counted = await backend.count_tokens([{"role": "user", "content": "What is the capital of France?"}])
            return backend, events, counted
        finally:
            await backend.aclose()

    backend, events, counted = run(go())
    assert backend.model == "smollm2-135m" and backend.context_length == 2048
    result = events[-1]
    assert isinstance(result, GenerationResult)
    deltas = [e.text for e in events if isinstance(e, Delta)]
    assert len(deltas) >= 2 and "".join(deltas) == result.text
    assert result.text.strip()  # an answer: its words are the model's business
    assert result.prompt_tokens == counted > 10  # /tokenize agrees with the server's own count
    assert 0 < result.output_tokens <= 32
    assert 0 < result.ttft_s <= result.e2e_s
    assert result.cached_tokens is not None


def test_prefill_is_continued(api_server, model_dir, run) -> None:
    request = _ask("List three fruits, numbered.", prefill="1. Apple\n2.", repetition_penalty=1.0)

    async def go():
        backend = await OpenAIBackend.connect([api_server])
        try:
            return await complete(backend, request)
        finally:
            await backend.aclose()

    result = run(go())
    # The server decoded from the open assistant turn (what the model writes there is its own business).
    assert result.text and result.prompt_tokens == continued_prompt_tokens(model_dir, request.messages, request.prefill)


def test_min_tokens_reaches_a_vllm_server_and_the_client_stops_honour_it(api_server, run) -> None:
    """``min_tokens`` goes in vLLM's extra body, and the client's own stop check waits for it too."""
    async def go(min_tokens: int) -> GenerationResult:
        backend = await OpenAIBackend.connect([api_server])
        try:
            return await complete(backend, _ask("Count from 1 to 20, one number per line.", max_tokens=48,
                                                 stop=["\n"], repetition_penalty=1.0, min_tokens=min_tokens))
        finally:
            await backend.aclose()

    free, held = run(go(0)), run(go(24))
    assert "\n" not in free.text and free.output_tokens < 24, free
    assert held.output_tokens >= 24 and "\n" in held.text and held.text.startswith(free.text)


def test_fleet_ejects_a_dead_member_then_readmits_it(api_server, run, caplog, monkeypatch) -> None:
    """A dead member costs one failed request, not one per request; when it answers /health again it is back."""
    from tests.runtime import servers

    monkeypatch.setenv("VIVACE_API_KEY", "sk-test-secret-123")
    port = free_port()
    dead = f"http://127.0.0.1:{port}"

    async def go():
        backend = await OpenAIBackend.connect([dead, api_server], backoff_s=0.01)
        try:
            results = await asyncio.gather(*(complete(backend, _ask(f"Say hello {i}.", max_tokens=8)) for i in range(8)))
            assert dead in backend.fleet.ejected_until and backend.fleet.healthy() == [api_server]
            revived = servers.running(servers.health_app(), port)
            next(revived)  # the member comes back (only /health, which is what the probe reads)
            try:
                for _ in range(600):  # the probe back-off reaches 30 s at most; a slow machine may need most of it
                    if dead not in backend.fleet.ejected_until:
                        break
                    await asyncio.sleep(0.1)
                readmitted = dead not in backend.fleet.ejected_until
            finally:
                next(revived, None)
            return backend, results, readmitted
        finally:
            await backend.aclose()

    with caplog.at_level(logging.DEBUG):
        backend, results, readmitted = run(go())
    assert all(r.output_tokens > 0 for r in results)
    assert backend.served[dead] == 0 and backend.served[api_server] == 8 + 1  # the 8, and connect's model list
    failed = [r for r in caplog.records if r.getMessage().startswith(f"request to {dead} failed")]
    assert len(failed) == 1, [r.getMessage() for r in failed]  # ejected after its first refusal
    assert readmitted and f"{dead} is healthy again" in caplog.text
    assert "sk-test-secret-123" not in caplog.text


def test_an_answer_cut_off_by_a_dying_server_is_finished_on_another(api_server, run, caplog) -> None:
    """The dying member streams three tokens and drops the connection: the answer continues on the real server."""
    from tests.runtime import servers

    for dying in servers.running(servers.dying_app(["Paris", " is", " the"])):
        async def go():
            backend = await OpenAIBackend.connect([dying.url, api_server], backoff_s=0.01, prefix_affinity=False)
            try:
                calls = [_ask(f"What is the capital of France? ({i})", max_tokens=24) for i in range(4)]
                return backend, await asyncio.gather(*(complete(backend, c) for c in calls))
            finally:
                await backend.aclose()

        with caplog.at_level(logging.WARNING):
            backend, results = run(go())
        assert dying.app.state.seen >= 1 and backend.resumed == dying.app.state.seen
        resumed = [r for r in results if r.text.startswith("Paris is the")]
        assert len(resumed) == backend.resumed  # the others never reached the dying server
        for r in resumed:
            assert len(r.text) > len("Paris is the") and r.finish_reason in ("stop", "length")
            assert 3 < r.output_tokens <= 24  # the dead server's tokens count toward the cap
        assert "resuming from the text so far" in caplog.text


def test_a_strict_server_that_dies_mid_answer_is_one_clear_error(run) -> None:
    """Without prefill continuation the half answer cannot be finished elsewhere: an error, not a silent restart."""
    from tests.runtime import servers

    for dying in servers.running(servers.dying_app(["Paris", " is"])):
        async def go():
            backend = await OpenAIBackend.connect([dying.url], dialect="strict", retries=1, backoff_s=0.01)
            try:
                return await complete(backend, _ask("Capital of France?"))
            finally:
                await backend.aclose()

        with pytest.raises(BackendError, match="cannot resume"):
            run(go())
        assert dying.app.state.seen == 1


def test_prefix_affinity_keeps_siblings_on_one_server(api_server, run) -> None:
    """SoT-like siblings (one long shared prefix, different tails) go to one server; other prompts spread."""
    alias = api_server.replace("127.0.0.1", "localhost")  # a second address of the same server
    shared = "You write one point of an answer. " * 12 + "Question: why do leaves change colour in autumn?\n"

    async def go(affinity: bool):
        backend = await OpenAIBackend.connect([api_server, alias], backoff_s=0.01, prefix_affinity=affinity)
        try:
            before = dict(backend.served)
            await asyncio.gather(*(complete(backend, _ask(shared + f"Point {i}: p{i}", max_tokens=4)) for i in range(4)))
            return {u: backend.served[u] - before[u] for u in backend.served}
        finally:
            await backend.aclose()

    with_affinity = run(go(True))
    assert sorted(with_affinity.values()) == [0, 4], with_affinity
    without = run(go(False))
    assert sorted(without.values()) == [2, 2], without  # least outstanding spreads them instead


def test_unreachable_server_is_a_clear_error(run) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BackendError, match=r"server unreachable after 3 attempts"):
        run(OpenAIBackend.connect([url], retries=2, backoff_s=0.01))


def test_too_long_prompt_is_input_error(api_server, run) -> None:
    async def go():
        backend = await OpenAIBackend.connect([api_server])
        try:
            return await complete(backend, _ask("word " * 3000))
        finally:
            await backend.aclose()

    with pytest.raises(InputError, match="2048"):
        run(go())
