"""The OpenAI-compatible HTTP face of one runtime: ``/v1/chat/completions``, ``/v1/models``, runs, health, metrics.

Why on the run driver: a request is a run like any other (``vivace.agents.driver.run``),
so it gets the same call path, context decisions, record in ``runs.jsonl`` and
trace as ``vivace ask`` and ``vivace run``. Every client shares the one runtime:
one engine, one in-flight cap. A client that goes away cancels its run, and
cancelling a run aborts its requests at the engine.

Models: ``vivace-auto``, ``vivace-sot`` and ``vivace-normal`` speak the whole
chat API. One fresh question without tools goes to the SoT controller in that
mode; any other request (``tools``, ``response_format``, earlier turns, tool
turns) is a run of the ``chat`` agent, which sends the full message list as one
call (``vivace.serve.chat``; tool calls come back as OpenAI's ``tool_calls``).
Every registered agent and pipeline (plug-ins too, and pipeline files given to
``vivace serve --pipeline``) is also a model by its name: its task is the last
user message, the earlier turns are the run's ``options["messages"]``, and
``tools``/``response_format`` are refused with a 400 (they write their own prompts).

Runs are checkpointed like any other: ``thread`` (through ``extra_body``) names a
conversation whose earlier turns the run gets, and the run endpoints
(``vivace.serve.runs``) read and resume runs from the checkpoint store, which
replicas sharing one PostgreSQL share.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vivace.agents.chat import NAME as CHAT
from vivace.agents.driver import run, run_record
from vivace.choices import Compression
from vivace.errors import VivaceError
from vivace.runtime.tool_calls import content_text
from vivace.serve.metrics import CONTENT_TYPE, ServerMetrics
from vivace.serve.runs import run_routes
from vivace.serve.state import KEEP_RUNS as KEEP_RUNS
from vivace.serve.state import MODES as MODES
from vivace.serve.state import RUN_HEADER as RUN_HEADER
from vivace.serve.state import ServerState as ServerState
from vivace.serve.state import error, failure
from vivace.serve.chat import (ResponseFormat, ReplyStream, ToolChoiceField, ToolDef, chat_settings, check_tools,
                               message_dict, needs_chat)
from vivace.trace import RunTrace

log = logging.getLogger(__name__)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        return content_text(self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The OpenAI fields vivace uses; others are accepted and ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    n: int = Field(default=1, ge=1, le=1)
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoiceField | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    # vivace's own, through the SDK's extra_body
    collection: str | None = None
    compression: Compression | None = None
    thread: str | None = None  # a conversation kept in the checkpoint store: any replica continues it

    @model_validator(mode="after")
    def _tools_fit(self) -> "ChatRequest":
        if why := check_tools(self.tools, self.tool_choice):
            raise ValueError(why)
        return self

    def task(self) -> str:
        user = [m for m in self.messages if m.role == "user"]
        return user[-1].text() if user else ""

    def structured(self) -> bool:
        """True when the request asks for what only the vivace-* models do: tools or a JSON reply."""
        return bool(self.tools) or (self.response_format is not None and self.response_format.type != "text")

    def earlier(self) -> list[dict[str, Any]]:
        """The turns before the last user message: what an agent or pipeline gets as ``options["messages"]``."""
        last = max((i for i, m in enumerate(self.messages) if m.role == "user"), default=len(self.messages))
        return [message_dict(m) for m in self.messages[:last]]


def create_app(state: ServerState) -> FastAPI:
    """The FastAPI app around an open runtime (the caller opens and closes it)."""
    app = FastAPI(title="vivace", docs_url=None, redoc_url=None, openapi_url=None)
    state.metrics = state.metrics or ServerMetrics(state.runtime)
    metrics = state.metrics

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        return error(400, f"{where}: {message}" if where else message, "invalid_request_error")

    @app.middleware("http")
    async def check_key(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if state.api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {state.api_key}".encode()):
                return error(401, "missing or wrong API key (Authorization: Bearer ...)", "invalid_request_error",
                             "invalid_api_key")
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "backend": state.runtime.backend.name, "model": state.runtime.backend.model}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.page(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        now = int(time.time())
        return {"object": "list", "data": [{"id": m, "object": "model", "created": now, "owned_by": "vivace"}
                                           for m in state.models()]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request) -> Response:
        try:
            target, options = state.target(body.model)
        except LookupError:
            return error(404, f"model {body.model!r} does not exist; GET /v1/models lists {', '.join(state.models())}",
                         "invalid_request_error", "model_not_found")
        except VivaceError as exc:  # a plug-in pipeline that does not hold together
            return error(400, str(exc), "invalid_request_error")
        task, chat = body.task(), None
        if body.model in MODES or body.model == CHAT:
            messages = [message_dict(m) for m in body.messages]
            if body.model == CHAT or needs_chat(messages, body.structured()):
                chat = chat_settings(body)
                target, options = CHAT, {"chat": chat}
                task = task.strip() or next((t for m in reversed(body.messages) if (t := m.text().strip())), "")
        elif body.structured():
            return error(400, f"tools and response_format are for the models {', '.join(MODES)}; {body.model!r} is "
                              "an agent or pipeline that writes its own prompts", "invalid_request_error")
        elif earlier := body.earlier():
            options["messages"] = earlier
        if not task.strip():
            return error(400, "messages: the last user message is empty (or there is none)", "invalid_request_error")
        limit = body.max_completion_tokens or body.max_tokens
        options.update({k: v for k, v in {"max_tokens": limit, "temperature": body.temperature}.items() if v is not None})
        run_id = uuid.uuid4().hex[:12]
        # Whole answers need no stream; a chat run's reply streams (text, or each tool call as it completes).
        stream = ReplyStream(run_id, streams_answer=body.stream and body.model in MODES, chat=chat)
        wake = asyncio.Event()

        def on_event(event: Any) -> None:
            stream(event)
            wake.set()

        def on_finish(trace: RunTrace) -> None:
            state.keep(run_record(trace))
            metrics.observe(body.model, trace)
            wake.set()

        job = asyncio.create_task(run(
            target, task, state.runtime, on_event=on_event, options=options, on_finish=on_finish,
            collection=body.collection or state.collection, compression=body.compression, run_id=run_id,
            thread=body.thread,
        ))
        if body.stream:
            return StreamingResponse(_sse(body, run_id, job, stream, wake), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", RUN_HEADER: run_id})
        return await _complete(body, run_id, job, request, stream)

    app.include_router(run_routes(state))
    return app


async def _complete(body: ChatRequest, run_id: str, job: asyncio.Task[RunTrace], request: Request,
                    stream: ReplyStream) -> Response:
    """A non-streaming answer; a client that disconnects first cancels the run."""
    while not job.done():
        done, _ = await asyncio.wait([job], timeout=0.5)
        if not done and await request.is_disconnected():
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            return Response(status_code=499, headers={RUN_HEADER: run_id})  # nginx's "client closed request"
    try:
        trace = job.result()
    except Exception as exc:  # noqa: BLE001 - a failed run, or bad input before it started (a bad mode)
        status, message, kind = failure(exc)
        return error(status, message, kind, run_id=run_id)
    return JSONResponse(_completion(body, trace, stream), headers={RUN_HEADER: run_id})


def _usage(trace: RunTrace) -> dict[str, int]:
    return {"prompt_tokens": trace.prompt_tokens, "completion_tokens": trace.output_tokens,
            "total_tokens": trace.prompt_tokens + trace.output_tokens}


def _completion(body: ChatRequest, trace: RunTrace, stream: ReplyStream) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{trace.run_id}", "object": "chat.completion", "created": int(trace.started_at),
        "model": body.model,
        "choices": [{"index": 0, "message": stream.message(trace),
                     "finish_reason": stream.finish_reason(trace), "logprobs": None}],
        "usage": _usage(trace),
    }


async def _sse(body: ChatRequest, run_id: str, job: asyncio.Task[RunTrace], stream: ReplyStream,
               wake: asyncio.Event) -> AsyncIterator[str]:
    """Server-sent chunks as the answer grows; a client that disconnects cancels the generator, and the run."""
    base = {"id": f"chatcmpl-{run_id}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body.model}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        payload = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(payload)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": None if stream.json else ""})
        while True:
            wake.clear()
            for delta in stream.take():
                yield chunk(delta)
            if job.done():
                break
            await wake.wait()
        try:
            trace = job.result()
        except Exception as exc:  # noqa: BLE001 - the failure goes to the client as OpenAI's error event
            status, message, kind = failure(exc)
            yield f"data: {json.dumps({'error': {'message': message, 'type': kind, 'code': status}})}\n\n"
            yield "data: [DONE]\n\n"
            return
        for delta in stream.finish(trace):
            yield chunk(delta)
        yield chunk({}, stream.finish_reason(trace))
        if body.stream_options is not None and body.stream_options.include_usage:
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': _usage(trace)})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        if not job.done():  # the client went away mid-stream: stop its run, which aborts its engine requests
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
