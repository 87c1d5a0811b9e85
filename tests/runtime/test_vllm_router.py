"""vLLM's router (the real ``vllm-router`` binary) in front of a real vLLM api_server on 127.0.0.1.

The router is one more OpenAI-compatible endpoint to vivace: the plain
OpenAIBackend and a ``[models.NAME]`` table reach the server through it. The
comparison with vivace's own fleet routing is ``tests/bench/test_fleet_bench.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from vivace.errors import BackendError, InputError
from vivace.runtime import GenerationRequest, complete
from vivace.runtime.openai_http import OpenAIBackend
from vivace.runtime.vllm_router import VLLMRouter, renders

from tests.helpers import continued_prompt_tokens, free_port


async def _refused(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            await client.get(url + "/health")
    except httpx.ConnectError:
        return True
    return False


@pytest.mark.engine
def test_a_request_through_the_router_is_answered_and_the_router_stops(api_server: str, model_dir: Path,
                                                                       run: Callable[..., Any]) -> None:
    async def go() -> tuple[Any, ...]:
        router = VLLMRouter([api_server + "/v1"], "cache_aware")  # a base URL with /v1 names the same server
        async with router:
            assert router.running and router.url.startswith("http://127.0.0.1:")
            log_file = router.log_file
            backend = await OpenAIBackend.connect([router.url])
            try:
                request = GenerationRequest(messages=[{"role": "user", "content": "List three fruits, numbered."}],
                                            prefill="1. Apple\n2.", max_tokens=24)
                result = await complete(backend, request)
            finally:
                await backend.aclose()
            counted = await router.counters()
            proc = router._proc
        assert proc is not None
        return backend, result, counted, proc.returncode, router, log_file, await _refused(router.url), \
            await renders(api_server, "smollm2-135m")

    backend, result, counted, code, router, log_file, refused, rendered = run(go())
    # The router passes vLLM's model list on, so the backend speaks the vLLM dialect: the prefill is continued.
    assert (backend.model, backend.dialect, backend.context_length) == ("smollm2-135m", "vllm", 2048)
    assert result.text.strip()  # its words are the model's; the prompt it decoded from ends in the open assistant turn:
    asked = [{"role": "user", "content": "List three fruits, numbered."}]
    assert result.prompt_tokens == continued_prompt_tokens(model_dir, asked, "1. Apple\n2.")
    assert result.finish_reason in ("stop", "length") and 0 < result.output_tokens <= 24
    assert result.prompt_tokens > 10 and result.cached_tokens is not None  # usage passes through the router
    assert counted["per_worker"] == {api_server: 1.0}  # the router's own count of where it sent the request
    # This server was started without --enable-scale-out: the router got no tokens to match prefixes on.
    assert rendered is False and counted["prefix_decisions"].get("missing_tokens", 0) >= 1
    assert code is not None and not router.running and refused  # stopped, its port closed
    assert log_file is not None and not log_file.exists()  # its temporary log went with it


@pytest.mark.engine
def test_a_named_model_at_the_router_url_serves_calls(api_server: str, run: Callable[..., Any], tmp_path: Path) -> None:
    from vivace.assembly import runtime_for
    from vivace.config import load_config
    from vivace.runtime.call import Call
    from vivace.runtime.fake import FakeBackend

    async def go() -> Any:
        async with VLLMRouter([api_server], "round_robin", log_file=tmp_path / "router.log") as router:
            file = tmp_path / "vivace.toml"
            file.write_text(f'backend = "fake"\n[models.routed]\nbackend = "openai"\nbase_urls = ["{router.url}"]\n'
                            'served_model_name = "smollm2-135m"\n')
            config = load_config(file, environ={})
            runtime = runtime_for(config, FakeBackend(), save_runs=False)
            try:
                return await runtime.call(Call([{"role": "user", "content": "What is the capital of France?"}],
                                               model="routed", max_tokens=16))
            finally:
                await runtime.aclose()

    result, trace = run(go())
    assert trace.model == "routed" and trace.served_by == "openai:smollm2-135m"
    assert result.text.strip() and trace.output_tokens > 0
    assert (tmp_path / "router.log").read_text()  # a log the caller named is kept


def test_a_missing_binary_or_a_bad_policy_is_one_error(tmp_path: Path, run: Callable[..., Any]) -> None:
    with pytest.raises(BackendError, match="vllm-router is not installed .*pip install vllm-router"):
        run(VLLMRouter(["http://127.0.0.1:9"], binary=str(tmp_path / "vllm-router")).start())
    with pytest.raises(InputError, match="policy must be one of cache_aware"):
        VLLMRouter(["http://127.0.0.1:9"], "kv_aware")


def test_a_router_whose_workers_never_come_up_fails_its_start_and_ends(tmp_path: Path, run: Callable[..., Any]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    router = VLLMRouter([dead], log_file=tmp_path / "router.log")
    with pytest.raises(BackendError, match="vllm-router (exited during start|did not list)"):
        run(router.start(timeout_s=3))
    assert not router.running and run(_refused(router.url))
    assert (tmp_path / "router.log").exists()  # kept for the error message's pointer

