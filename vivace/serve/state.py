"""What the server's endpoints share: its state (the runtime, the served models, the recent runs) and error shape.

Why its own module, below the app (``vivace.serve.app``) and its run endpoints
(``vivace.serve.runs``): the app mounts the run endpoints, and both read the
one ``ServerState`` and answer errors in OpenAI's shape; here they share them
without importing each other.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse

from vivace.agents.base import Agent
from vivace.agents.driver import resolve
from vivace.agents.registry import REGISTRY
from vivace.choices import Mode
from vivace.errors import VivaceError
from vivace.serve.metrics import ServerMetrics

MODES = {f"vivace-{mode}": mode.value for mode in Mode}
RUN_HEADER = "x-vivace-run-id"
KEEP_RUNS = 1000  # records kept in memory for /v1/runs/{id}; every run is also in runs.jsonl and the checkpoints


@dataclass
class ServerState:
    runtime: Any
    api_key: str | None = None
    pipelines: dict[str, Agent] = field(default_factory=dict)  # served from files, by name
    collection: str | None = None  # the default for requests that name none
    runs: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    metrics: ServerMetrics | None = None

    def models(self) -> list[str]:
        return [*MODES, *sorted(set(REGISTRY.names()) | set(self.pipelines))]

    def target(self, model: str) -> tuple[Agent | str, dict[str, Any]]:
        if model in MODES:
            return "sot", {"mode": MODES[model]}
        if model in self.pipelines:
            return self.pipelines[model], {}
        if model in REGISTRY.names():
            return resolve(model), {}
        raise LookupError(model)

    def keep(self, record: dict[str, Any]) -> None:
        self.runs[record["run_id"]] = record
        while len(self.runs) > KEEP_RUNS:
            self.runs.popitem(last=False)


def error(status: int, message: str, kind: str, code: str | None = None, run_id: str | None = None) -> JSONResponse:
    """OpenAI's error shape, which SDKs turn into their own exception types."""
    headers = {RUN_HEADER: run_id} if run_id else None
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}},
                        status_code=status, headers=headers)


def failure(exc: BaseException) -> tuple[int, str, str]:
    """(HTTP status, message, error type) for an exception a run raised."""
    code = exc.exit_code if isinstance(exc, VivaceError) else 1
    if code == 2:
        return 400, str(exc), "invalid_request_error"
    return 500, str(exc) or type(exc).__name__, "server_error"
