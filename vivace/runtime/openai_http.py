"""OpenAI-compatible servers, through the official ``openai`` SDK: vLLM's api_server, SGLang, hosted APIs.

One or many base URLs (with or without the SDK's ``/v1``). With several, the
fleet (``vivace.runtime.fleet``) picks the server: healthy ones only, the
prompt prefix's own server first, balanced by load; vLLM itself does the
tensor, pipeline and multi-node parallelism behind each URL.

What an endpoint accepts is its *dialect*, probed once (or set with
``openai_dialect``): a vLLM-style server takes vendor fields (repetition
penalty, ``ignore_eos``, ``min_tokens``, continuing an assistant prefill, ``/tokenize``); a
strict one (hosted APIs) gets the standard fields only: a prefill is not sent
(the prompts lead the model to open with its text, and that echo is cut from
the answer). Either way the client keeps
its own promises: stop strings are applied here too, a server that ignores
``max_tokens`` is cut off, every call has an overall deadline, and a 200 that
holds no completion is an error. Retries go where nothing was generated yet
(a connection refused, a 5xx), never after a read timeout (the server may
still be generating). A server that dies mid-answer is different: on a
vLLM-style fleet the answer is resumed on another member, continuing the text
so far as a prefill with the tokens left, so a run loses no call.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import json
import openai
from asyncio_throttle.throttler import Throttler  # the package's __init__ does not re-export it to a type checker

from vivace.choices import Dialect, values
from vivace.errors import BackendError, InputError
from vivace.runtime.backend import Event, GenerationRequest, Message, Timer
from vivace.runtime.fleet import Fleet, prefix_blocks
from vivace.runtime.openai_reply import Reply

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_CONTEXT = 8192
DIALECTS = values(Dialect)


class _Retryable(Exception):
    """A failure before any output was streamed: safe to send elsewhere."""


def server_root(url: str) -> str:
    """The server's root: ``http://h:8000/v1/`` and ``http://h:8000`` are the same server."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


@dataclass
class _Endpoint:
    root: str
    client: openai.AsyncOpenAI
    throttle: Throttler | None


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
        dialect: str = "auto",
        requests_per_minute: float | None = None,
        prefix_affinity: bool = True,
    ) -> None:
        if not base_urls:
            raise BackendError("the openai backend needs at least one --base-url")
        if dialect not in DIALECTS:
            raise InputError(f"openai_dialect must be one of {', '.join(DIALECTS)}, got {dialect!r}")
        self.base_urls = [server_root(u) for u in base_urls]
        self.model = model or ""
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.dialect = dialect
        key = os.environ.get(api_key_env) or "none"  # the SDK wants a key; local servers ignore it
        # The SDK's own Timeout: the SDK moved from httpx to httpx2 (openai 3.x), and takes only its own kind.
        timeout = openai.Timeout(timeout_s, connect=min(10.0, timeout_s))
        self._endpoints = {
            root: _Endpoint(root, openai.AsyncOpenAI(base_url=f"{root}/v1", api_key=key, max_retries=0,
                                                       timeout=timeout),
                            # paced evenly: one request every 60/rpm seconds never breaks a per-minute meter
                            Throttler(rate_limit=1, period=60.0 / requests_per_minute) if requests_per_minute else None)
            for root in self.base_urls
        }
        self.fleet = Fleet(self.base_urls, self._healthy, affinity=prefix_affinity)
        self._context_length = DEFAULT_CONTEXT
        self._warned_cap = False
        self.resumed = 0  # answers a dying server left half-done, finished on another

    @classmethod
    async def connect(cls, base_urls: list[str], model: str | None = None, **kwargs: Any) -> "OpenAIBackend":
        """Create the backend; learn the served model, its context and the dialect from the first live server."""
        backend = cls(base_urls, model, **kwargs)
        try:
            await backend._learn(model)
        except BaseException:
            await backend.aclose()  # the fleet's probe and the clients go with it
            raise
        return backend

    async def _learn(self, model: str | None) -> None:
        """The served model, its context and the dialect, from the first live server's model list."""
        info = await self._json("GET", "/v1/models")
        served = [m for m in info.get("data") or [] if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]]
        if not served:
            raise BackendError("the server lists no models at /v1/models (no entry with an id)")
        chosen = next((m for m in served if m.get("id") == model), None) if model else served[0]
        if chosen is None:
            names = ", ".join(m.get("id", "?") for m in served)
            raise BackendError(f"model {model!r} is not served; the server has: {names}")
        self.model = chosen["id"]
        try:
            self._context_length = int(chosen.get("max_model_len") or DEFAULT_CONTEXT)
        except (TypeError, ValueError):
            raise BackendError(f"/v1/models gives {chosen['id']!r} a max_model_len that is not a number") from None
        if self.dialect == "auto":  # vLLM lists max_model_len; hosted APIs and strict servers do not
            self.dialect = "vllm" if "max_model_len" in chosen else "strict"
            log.debug("%s speaks the %s dialect", self.base_urls[0], self.dialect)

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def vendor_fields(self) -> bool:
        return self.dialect == "vllm"

    @property
    def outstanding(self) -> dict[str, int]:
        return self.fleet.outstanding

    @property
    def served(self) -> dict[str, int]:
        return self.fleet.served

    async def _healthy(self, url: str) -> bool:
        """The fleet's probe of an ejected server: its ``/health`` (vLLM's), else its model list, answers 200."""
        client = self._endpoints[url].client.with_options(timeout=2.0)
        for path in ("/health", "/v1/models"):
            try:
                await client.get(f"{url}{path}", cast_to=str)
                return True
            except openai.NotFoundError:
                continue
            except openai.APIError:
                return False
        return False

    async def _with_retries(self, attempt: Callable[[_Endpoint], Awaitable[T]], blocks: list[bytes] | None = None) -> T:
        """Run ``attempt(endpoint)`` on the fleet's pick, moving on (with backoff) on failures that generated nothing."""
        failed: set[str] = set()
        last = ""
        for i in range(self.retries + 1):
            url = self.fleet.pick(blocks, failed)
            self.outstanding[url] += 1
            try:
                result = await attempt(self._endpoints[url])
                self.fleet.succeeded(url)
                return result
            except _Retryable as exc:
                last = f"{url}: {exc}"
                failed.add(url)
                self.fleet.failed(url)
                if len(failed) == len(self.base_urls):
                    failed.clear()
                if i < self.retries:
                    log.warning("request to %s failed (%s); trying again (%d of %d retries)", url, exc, i + 1, self.retries)
                    await asyncio.sleep(self.backoff_s * 2**i)
            finally:
                self.outstanding[url] -= 1
        raise BackendError(f"server unreachable after {self.retries + 1} attempts ({last})")

    async def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JSON object from ``path`` at the server's root, through the SDK's client."""
        async def attempt(ep: _Endpoint) -> dict[str, Any]:
            try:
                # The body as text (cast_to=str), read here: the SDK's response class is its HTTP library's.
                if method == "GET":
                    text = await ep.client.get(f"{ep.root}{path}", cast_to=str)
                else:
                    text = await ep.client.post(f"{ep.root}{path}", cast_to=str, body=body)
            except openai.APIStatusError as exc:
                _raise_status(exc)
            except openai.APIConnectionError as exc:
                raise _Retryable(_why(exc)) from None
            try:
                data = json.loads(text)
            except ValueError:
                raise BackendError(f"{ep.root}{path} answered with something that is not JSON: {text[:80]!r}") from None
            if not isinstance(data, dict):
                raise BackendError(f"{ep.root}{path} answered with a JSON {type(data).__name__}, not an object")
            return data

        return await self._with_retries(attempt)

    async def count_tokens(self, messages: list[Message], prefill: str | None = None) -> int:
        """Exact from vLLM's ``/tokenize``; otherwise an estimate (about 4 characters a token)."""
        chat = [*messages, {"role": "assistant", "content": prefill}] if prefill is not None else messages
        if self.vendor_fields:
            body = {"model": self.model, "messages": chat, "add_generation_prompt": prefill is None,
                    "continue_final_message": prefill is not None}
            try:
                return int((await self._json("POST", "/tokenize", body))["count"])
            except (InputError, BackendError, KeyError, TypeError, ValueError):
                pass
        return sum(len(m["content"]) // 4 + 4 for m in chat)

    def _arguments(self, request: GenerationRequest) -> dict[str, Any]:
        """The create() arguments: standard fields, plus vendor fields where the dialect has them."""
        messages: list[Message] = list(request.messages)
        extra: dict[str, Any] = {}
        if self.vendor_fields:
            if request.prefill is not None:
                messages = request.chat()
                extra.update(continue_final_message=True, add_generation_prompt=False)
            if request.repetition_penalty != 1.0:
                extra["repetition_penalty"] = request.repetition_penalty
            if request.ignore_eos:
                extra["ignore_eos"] = True
            if request.min_tokens:
                extra["min_tokens"] = request.min_tokens
        # A strict server cannot continue a reply: the prompt (few-shot turns, the point it names) already
        # leads the model to open with the prefill's text, and ``Reply`` cuts that echo when it comes.
        args: dict[str, Any] = {
            "model": self.model, "messages": messages, "max_tokens": request.max_tokens,
            "temperature": request.temperature, "top_p": request.top_p, "stream": True,
            "stream_options": {"include_usage": True},
        }
        spec = request.output
        if spec is not None and self.vendor_fields:  # vLLM's server decodes under the grammar, as the engine does
            extra["structured_outputs"] = ({"choice": list(spec.choices)} if spec.kind == "choice" else
                                           {"regex": spec.regex} if spec.kind == "regex" else {"json": spec.schema})
        elif spec is not None and spec.kind == "json":  # the standard field; choices and regexes are checked after
            args["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": spec.name[:64], "schema": spec.schema}}
        if request.stop:
            args["stop"] = list(request.stop)[:4]  # the standard allows four; all are applied here too
        if request.seed is not None:
            args["seed"] = request.seed
        if extra:
            args["extra_body"] = extra
        return args

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        timer = Timer()
        queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
        # One reply across attempts: a server that dies mid-answer is resumed elsewhere from the text so far.
        if not self.vendor_fields:  # a strict server is not told ``min_tokens``, so its stop strings count from the start
            request = replace(request, min_tokens=0)
        reply = Reply(request, None if self.vendor_fields else request.prefill, timer, queue)

        async def attempt(ep: _Endpoint) -> None:
            if ep.throttle is not None:  # the endpoint's request rate: the wait is queue time
                t0 = asyncio.get_running_loop().time()
                async with ep.throttle:
                    reply.waited += asyncio.get_running_loop().time() - t0
            resumed = reply.resume_point()
            if resumed is not None and resumed.max_tokens < 1:
                reply.finish = "length"  # the cap was reached just as the server died
            else:
                await self._stream(ep, resumed or request, reply)
            if reply.overflow:
                if not self._warned_cap:
                    self._warned_cap = True
                    log.warning("%s ignored max_tokens=%d; cut off on the client", ep.root, request.max_tokens)
            if reply.finish is None and not reply.parts and reply.usage is None:
                raise BackendError(f"{ep.root}: HTTP 200 without a chat completion in the body")
            await queue.put(reply.result(self.name, self.model))

        blocks = prefix_blocks(request.messages, request.prefill) if len(self.base_urls) > 1 else None

        async def run() -> None:
            try:
                await self._with_retries(attempt, blocks)
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

    async def _stream(self, ep: _Endpoint, request: GenerationRequest, reply: Reply) -> None:
        """One attempt's stream into ``reply``; failures that may go to another server raise ``_Retryable``."""
        try:
            async with asyncio.timeout(self.timeout_s):
                stream = await ep.client.chat.completions.create(**self._arguments(request))
                async with stream:
                    async for chunk in stream:
                        if reply.take(chunk):
                            break
        except TimeoutError:
            raise BackendError(f"{ep.root}: no complete answer within {self.timeout_s:g} s") from None
        except openai.APIStatusError as exc:
            _raise_status(exc)
        except openai.APIConnectionError as exc:
            if not reply.sent:
                raise _Retryable(_why(exc)) from None
            if _read_timeout(exc):  # the server may still be generating: sending it again doubles the work
                raise BackendError(f"{ep.root}: read timed out mid-answer ({_why(exc)}); not resent") from None
            if not self.vendor_fields:
                raise BackendError(f"{ep.root}: connection lost mid-answer ({_why(exc)}); a server without "
                                   "prefill continuation cannot resume it") from None
            reply.resumes += 1
            self.resumed += 1
            raise _Retryable(f"connection lost mid-answer ({_why(exc)}); resuming from the text so far") from None
        except openai.APIError as exc:  # a body the SDK could not read as chunks
            raise BackendError(f"{ep.root}: the answer is not a chat completion ({exc.message[:120]})") from None

    async def aclose(self) -> None:
        await self.fleet.aclose()
        for ep in self._endpoints.values():
            await ep.client.close()


def _why(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return type(cause).__name__ if cause is not None else type(exc).__name__


def _read_timeout(exc: openai.APIConnectionError) -> bool:
    """A timeout after the request went out: the server may be generating, so it is not sent again."""
    cause = exc.__cause__ or exc.__context__
    # By name: the cause is the SDK's HTTP library's (httpx or httpx2, by the SDK's version).
    return isinstance(exc, openai.APITimeoutError) and type(cause).__name__ != "ConnectTimeout"


def _raise_status(exc: openai.APIStatusError) -> None:
    status = exc.status_code
    if status >= 500 or status == 429:
        raise _Retryable(f"HTTP {status}") from None
    body = exc.body if isinstance(exc.body, dict) else {}
    message = body.get("message") or (body.get("error") or {}).get("message") if isinstance(body, dict) else None
    message = " ".join(str(message or exc.message).split())[:300]
    if status in (401, 403):
        raise BackendError(f"the server refused the API key (HTTP {status})") from None
    raise InputError(f"server rejected the request (HTTP {status}): {message}") from None
