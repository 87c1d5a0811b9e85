"""Test servers on loopback, each a real HTTP server (uvicorn in a thread) with one way of behaving:

- ``strict``: a hosted-API stand-in in front of the real vLLM api_server. It
  refuses any request field OpenAI's API does not define (as hosted APIs do,
  "Unrecognized request argument supplied: X") and lists models without vLLM's
  ``max_model_len``; what it accepts goes to the real server unchanged.
- ``trickle``: ignores ``max_tokens`` and streams a token every ``delay`` seconds, forever.
- ``garbage``: a model list, then HTTP 200 with a body that is no chat completion.
- ``dying``: a vLLM-style model list, then a stream that breaks off after a few
  tokens, as a server killed mid-answer does.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, AsyncIterator, Iterator

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

STANDARD_FIELDS = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream",
    "stream_options", "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
    "top_logprobs", "user", "response_format", "tools", "tool_choice", "parallel_tool_calls",
}
MODELS = {"object": "list", "data": [{"id": "smollm2-135m", "object": "model", "owned_by": "test"}]}


def strict_app(upstream: str) -> FastAPI:
    app = FastAPI()
    client = httpx.AsyncClient(base_url=upstream, timeout=600)
    app.state.seen = []  # the field sets of every request it accepted

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        listed = (await client.get("/v1/models")).json()
        return {"object": "list", "data": [{k: v for k, v in m.items() if k != "max_model_len"} for m in listed["data"]]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        unknown = sorted(set(body) - STANDARD_FIELDS)
        if unknown:
            return JSONResponse({"error": {"message": f"Unrecognized request argument supplied: {unknown[0]}",
                                           "type": "invalid_request_error", "param": None, "code": None}},
                                status_code=400)
        if any(m.get("role") == "assistant" for m in body["messages"][-1:]):
            return JSONResponse({"error": {"message": "the last message must be from the user",
                                           "type": "invalid_request_error"}}, status_code=400)
        app.state.seen.append(sorted(body))

        async def relay() -> AsyncIterator[bytes]:
            async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                async for part in resp.aiter_raw():
                    yield part

        return StreamingResponse(relay(), media_type="text/event-stream")

    return app


def sse_chunk(text: str) -> str:
    """One streamed chat-completion chunk carrying ``text``, as a server-sent event."""
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "smollm2-135m",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return f"data: {json.dumps(chunk)}\n\n"


def listing_app() -> FastAPI:
    """An app that lists the one model; the behaviours below add their chat endpoint."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return MODELS

    return app


def trickle_app(delay: float) -> FastAPI:
    app = listing_app()

    @app.post("/v1/chat/completions")
    async def chat() -> StreamingResponse:
        async def tokens() -> AsyncIterator[str]:
            i = 0
            while True:
                yield sse_chunk(f"tok{i} ")
                i += 1
                await asyncio.sleep(delay)

        return StreamingResponse(tokens(), media_type="text/event-stream")

    return app


def garbage_app() -> FastAPI:
    app = listing_app()

    @app.post("/v1/chat/completions")
    async def chat() -> Response:
        return Response("<html><body>Service temporarily fine</body></html>", media_type="text/html")

    return app


def dying_app(pieces: list[str]) -> FastAPI:
    """Streams ``pieces``, then drops the connection without ending the stream."""
    app = FastAPI()
    app.state.seen = 0

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{**MODELS["data"][0], "max_model_len": 2048}]}

    @app.post("/v1/chat/completions")
    async def chat() -> StreamingResponse:
        app.state.seen += 1

        async def tokens() -> AsyncIterator[str]:
            for piece in pieces:
                yield sse_chunk(piece)
                await asyncio.sleep(0.01)
            raise ConnectionResetError("the server died")  # uvicorn aborts the half-sent response

        return StreamingResponse(tokens(), media_type="text/event-stream")

    return app


def health_app() -> FastAPI:
    """Only ``/health``: a fleet member coming back."""
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


class Running:
    def __init__(self, app: FastAPI, port: int = 0) -> None:
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        sock = self.server.servers[0].sockets[0]
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def running(app: FastAPI, port: int = 0) -> Iterator[Running]:
    """Serve ``app`` on loopback (a free port by default) for the duration of a fixture."""
    r = Running(app, port)
    r.thread.start()
    deadline = time.time() + 30
    while not r.server.started:
        assert time.time() < deadline, "test server did not start"
        time.sleep(0.05)
    yield r
    r.server.should_exit = True
    r.thread.join(timeout=10)
