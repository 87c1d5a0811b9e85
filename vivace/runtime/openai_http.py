"""OpenAI-compatible servers over HTTP: vLLM's api_server, SGLang, llama.cpp's server.

One or many base URLs. Each request goes to the URL with the fewest requests
outstanding, which is how a fleet of vLLM servers is used from one process;
vLLM itself does the tensor, pipeline and multi-node parallelism.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from typing import Any, AsyncIterator

import httpx

from vivace.errors import BackendError, InputError
from vivace.runtime.backend import (
    Delta,
    Event,
    GenerationRequest,
    GenerationResult,
    Message,
    Timer,
)

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 8192


class _Retryable(Exception):
    """A failure before any output was streamed: safe to send elsewhere."""


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        base_urls: list[str],
        model: str | None = None,
        api_key_env: str = "VIVACE_API_KEY",
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_urls:
            raise BackendError("the openai backend needs at least one --base-url")
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self.model = model or ""
        self.retries = retries
        self.backoff_s = backoff_s
        key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            transport=transport,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self.outstanding = {u: 0 for u in self.base_urls}
        self.served = {u: 0 for u in self.base_urls}  # completed requests per URL
        self._rr = itertools.count()
        self._context_length = DEFAULT_CONTEXT

    @classmethod
    async def connect(cls, base_urls: list[str], model: str | None = None, **kwargs: Any) -> "OpenAIBackend":
        """Create the backend and learn the served model and its context from the first live server."""
        backend = cls(base_urls, model, **kwargs)
        info = await backend._request_json("GET", "/v1/models")
        served = [m for m in info.get("data") or [] if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]]
        if not served:
            raise BackendError("the server lists no models at /v1/models (no entry with an id)")
        chosen = next((m for m in served if m.get("id") == model), None) if model else served[0]
        if chosen is None:
            names = ", ".join(m.get("id", "?") for m in served)
            raise BackendError(f"model {model!r} is not served; the server has: {names}")
        backend.model = chosen["id"]
        try:
            backend._context_length = int(chosen.get("max_model_len") or DEFAULT_CONTEXT)
        except (TypeError, ValueError):
            raise BackendError(f"/v1/models gives {chosen['id']!r} a max_model_len that is not a number") from None
        return backend

    @property
    def context_length(self) -> int:
        return self._context_length

    def _pick(self, exclude: set[str]) -> str:
        """Least outstanding requests; ties broken round-robin."""
        candidates = [u for u in self.base_urls if u not in exclude] or self.base_urls
        low = min(self.outstanding[u] for u in candidates)
        tied = [u for u in candidates if self.outstanding[u] == low]
        return tied[next(self._rr) % len(tied)]

    async def _with_retries(self, attempt):  # type: ignore[no-untyped-def]
        """Run ``attempt(url)`` with backoff, moving to other URLs on connection errors and 5xx."""
        failed: set[str] = set()
        last = ""
        for i in range(self.retries + 1):
            url = self._pick(failed)
            self.outstanding[url] += 1
            try:
                result = await attempt(url)
                self.served[url] += 1
                return result
            except _Retryable as exc:
                last = f"{url}: {exc}"
                failed.add(url)
                if len(failed) == len(self.base_urls):
                    failed.clear()
                log.warning("request to %s failed (%s); retry %d/%d", url, exc, i + 1, self.retries)
                await asyncio.sleep(self.backoff_s * 2**i)
            finally:
                self.outstanding[url] -= 1
        raise BackendError(f"server unreachable after {self.retries + 1} attempts ({last})")

    async def _request_json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async def attempt(url: str) -> dict[str, Any]:
            try:
                resp = await self._client.request(method, url + path, json=body)
            except httpx.TransportError as exc:
                raise _Retryable(type(exc).__name__) from None
            if resp.status_code >= 500:
                raise _Retryable(f"HTTP {resp.status_code}")
            _raise_for_client_error(resp.status_code, resp.text)
            try:
                data = resp.json()
            except ValueError:
                raise BackendError(f"{url}{path} answered with something that is not JSON: {resp.text[:80]!r}") from None
            if not isinstance(data, dict):
                raise BackendError(f"{url}{path} answered with a JSON {type(data).__name__}, not an object")
            return data

        return await self._with_retries(attempt)

    async def count_tokens(self, messages: list[Message], prefill: str | None = None) -> int:
        """Exact count from vLLM's ``/tokenize``; other servers get a rough estimate."""
        chat = [*messages, {"role": "assistant", "content": prefill}] if prefill is not None else messages
        body = {
            "model": self.model,
            "messages": chat,
            "add_generation_prompt": prefill is None,
            "continue_final_message": prefill is not None,
        }
        try:
            data = await self._request_json("POST", "/tokenize", body)
            return int(data["count"])
        except (InputError, BackendError, KeyError, TypeError, ValueError):  # no /tokenize, or not vLLM's
            return sum(len(m["content"]) // 4 + 4 for m in chat)

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": request.chat(),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.stop:
            body["stop"] = request.stop
        if request.seed is not None:
            body["seed"] = request.seed
        if request.ignore_eos:
            body["ignore_eos"] = True
        if request.repetition_penalty != 1.0:
            body["repetition_penalty"] = request.repetition_penalty
        if request.prefill is not None:
            # vLLM/SGLang extension: continue the final assistant message.
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        return body

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        timer = Timer()
        queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()

        async def attempt(url: str) -> None:
            state = {"text": [], "usage": None, "finish": "unknown", "sent": False}
            try:
                async with self._client.stream("POST", url + "/v1/chat/completions", json=self._body(request)) as resp:
                    if resp.status_code >= 500:
                        raise _Retryable(f"HTTP {resp.status_code}")
                    if resp.status_code >= 400:
                        _raise_for_client_error(resp.status_code, (await resp.aread()).decode(errors="replace"))
                    async for line in resp.aiter_lines():
                        _consume(line, state, timer, queue, request.request_id)
            except httpx.TransportError as exc:
                if not state["sent"]:
                    raise _Retryable(type(exc).__name__) from None
                raise BackendError(f"{url}: connection lost mid-stream ({type(exc).__name__})") from None
            usage = state["usage"] or {}
            details = usage.get("prompt_tokens_details") or {}
            elapsed = timer.elapsed
            await queue.put(GenerationResult(
                text="".join(state["text"]),
                finish_reason=state["finish"],
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                output_tokens=int(usage.get("completion_tokens", 0)),
                queue_s=0.0,
                ttft_s=timer.ttft,
                e2e_s=elapsed,
                cached_tokens=details.get("cached_tokens"),
                started_at=timer.started_at,
                ended_at=timer.started_at + elapsed,
                tag=request.tag,
                request_id=request.request_id,
                backend=self.name,
                model=self.model,
            ))

        async def run() -> None:
            try:
                await self._with_retries(attempt)
            except BaseException as exc:  # handed to the consumer, re-raised there
                await queue.put(exc)
            finally:
                await queue.put(None)

        task = asyncio.create_task(run())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def aclose(self) -> None:
        await self._client.aclose()


def _consume(line: str, state: dict[str, Any], timer: Timer, queue: asyncio.Queue, request_id: str) -> None:
    """Parse one server-sent-events line of a streamed chat completion."""
    if not line.startswith("data:"):
        return
    payload = line[5:].strip()
    if payload == "[DONE]" or not payload:
        return
    chunk = json.loads(payload)
    if chunk.get("usage"):
        state["usage"] = chunk["usage"]
    for choice in chunk.get("choices") or []:
        piece = (choice.get("delta") or {}).get("content") or ""
        if piece:
            timer.mark_first()
            state["text"].append(piece)
            state["sent"] = True
            queue.put_nowait(Delta(piece, request_id))
        if choice.get("finish_reason"):
            state["finish"] = choice["finish_reason"]


def _raise_for_client_error(status: int, body: str) -> None:
    if status < 400:
        return
    try:
        message = json.loads(body).get("error", {})
        message = message.get("message", body) if isinstance(message, dict) else str(message)
    except (json.JSONDecodeError, AttributeError):
        message = body
    message = " ".join(str(message).split())[:300]
    if status in (401, 403):
        raise BackendError(f"the server refused the API key (HTTP {status})")
    raise InputError(f"server rejected the request (HTTP {status}): {message}")

