"""One route decision for the SoT controller and a writer's long-form answer: the same guard holds in both."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from vivace.agents.builtin import research_pipeline
from vivace.agents.driver import ask, run
from vivace.agents.guard import save_verdicts
from vivace.assembly import runtime_for
from vivace.config import Config
from vivace.runtime.backend import GenerationRequest
from vivace.runtime.fake import FakeBackend
from tests.agents.fakes import research_responder

TASK = "How do I kill a stuck Python process?"  # a sensitive word, innocent here: what the guard keys on


@pytest.fixture()
def router_says_sot(monkeypatch: pytest.MonkeyPatch) -> None:
    import vivace.agents.sot.route as sot_route

    async def always_sot(question: str) -> tuple[str, str]:
        return "sot", "stub: the router would split it"

    monkeypatch.setattr(sot_route, "aroute", always_sot)


def respond(request: GenerationRequest) -> str:
    if request.tag.endswith("/skeleton"):
        return " Find it\n2. Signal it\n3. Check it"
    return ": Detail." if "expand" in request.tag else research_responder()(request)


def decisions(home: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The controller's route and the writer's long-form decision, for TASK in auto, on one runtime."""
    runtime = runtime_for(Config(backend="fake", home=home, max_tokens=128), FakeBackend(respond), save_runs=False)
    controller = asyncio.run(ask(TASK, runtime, mode="auto")).router
    trace = asyncio.run(run(research_pipeline(), TASK, runtime, options={"long_form": "auto", "load_aware": False}))
    writer = next(s for s in trace.steps if s["step"] == "write")["extra"]["long_form"]
    return controller, writer


def test_the_guard_keeps_a_sensitive_task_off_sot_in_the_controller_and_the_writer(tmp_path: Path,
                                                                                   router_says_sot: None) -> None:
    controller, writer = decisions(tmp_path)  # no verdict yet: SoT is guarded
    assert controller["mode"] == writer["mode"] == "normal"
    assert controller["reason"].startswith("guard:") and writer["reason"].startswith("guard:")


def test_a_verdict_that_guards_nothing_lets_both_expand(tmp_path: Path, router_says_sot: None) -> None:
    save_verdicts(tmp_path, [], {})  # the safety bench found SoT safe here
    controller, writer = decisions(tmp_path)
    assert not controller["reason"].startswith("guard:") and not writer["reason"].startswith("guard:")
    assert writer["mode"] == "sot" and "length_plan" in writer
