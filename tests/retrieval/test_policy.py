"""The per-call context policy through the run driver: real Chroma, real MiniLM, a measured cost model.

The FakeBackend stands in for the engine only to shape the prefill cost the
cost model measures (``prefill_per_token_s``) and to record the prompts sent;
retrieval and compression are the real parts.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from vivace.agents.base import AgentContext, StepInput
from vivace.agents.driver import run
from vivace.agents.pipeline.spec import Pipeline, Step
from vivace.assembly import runtime_for
from vivace.config import Config
from vivace.retrieval.store import Store
from vivace.runtime.backend import GenerationRequest
from vivace.runtime.fake import FakeBackend

from .conftest import ingest_corpus


@pytest.fixture(scope="module")
def corpus(rconfig: Config, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, str, list[dict[str, str]]]:
    name, questions = ingest_corpus(rconfig, tmp_path_factory, "policy", docs=6, seed=5)
    return rconfig, name, questions


def plan_responder(questions: list[dict[str, str]]) -> Any:
    plan = json.dumps({"aspects": [q["question"] for q in questions[:3]]})

    def respond(request: GenerationRequest) -> str:
        if "/plan" in request.tag:
            return plan
        return json.dumps({"verdict": "approve", "fix": ""}) if "/review" in request.tag else "Some notes."

    return respond


def test_every_call_of_a_pipeline_retrieves_with_its_own_query(corpus: Any) -> None:
    config, name, questions = corpus
    backend = FakeBackend(plan_responder(questions))
    runtime = runtime_for(config.replace(compression="off"), backend, save_runs=False)
    trace = asyncio.run(run("research", "Find the planted facts.", runtime, collection=name))
    decisions = {(c.agent, c.branch): c.extra["context"] for c in trace.calls}
    assert {a for a, _ in decisions} == {"planner", "researcher", "writer", "critic"}
    for (agent, _), ctx in decisions.items():
        assert ctx["retrieval"]["collection"] == name and ctx["compression"] == "skipped"
        assert ctx["retrieved"] + ctx["retrieval"]["already_in_prompt"] == config.retrieval_k
        assert ctx["prompt_tokens_before"] > 0
    researchers = [c for c in trace.calls if c.agent == "researcher"]
    assert len(researchers) == 3
    queries = {c.extra["context"]["retrieval"]["query"] for c in researchers}
    assert queries == {q["question"] for q in questions[:3]}  # each branch's own sub-question
    for call in researchers:  # the planted fact for that branch's question reached that branch's prompt
        q = next(q for q in questions if q["question"] == call.extra["context"]["retrieval"]["query"])
        sent = next(r for r in backend.requests if r.tag.endswith(f"/research/{call.branch}"))
        assert q["answer"] in sent.messages[-1]["content"]


def test_chunks_the_prompt_already_holds_are_not_sent_twice(corpus: Any) -> None:
    config, name, questions = corpus
    question = questions[0]["question"]
    held = Store(config).retrieve(question, 1, name)[0].text

    async def quoting(inp: StepInput, ctx: AgentContext) -> str:
        result = await ctx.call([{"role": "user", "content": f"{held}\n\n{inp['task']}"}])
        return result.text

    backend = FakeBackend()
    runtime = runtime_for(config.replace(compression="off"), backend, save_runs=False)
    pipe = Pipeline("quote", [Step("q", "quoting", impl=_function_agent(quoting))])
    trace = asyncio.run(run(pipe, question, runtime, collection=name))
    ctx = trace.calls[0].extra["context"]
    assert ctx["retrieval"]["already_in_prompt"] == 1 and ctx["retrieved"] == config.retrieval_k - 1
    assert backend.requests[0].messages[-1]["content"].count(held.strip()) == 1


@pytest.mark.parametrize(("prefill_per_token_s", "compressed"), [(2e-3, True), (0.0, False)])
def test_a_measured_cost_model_decides_per_call(corpus: Any, tmp_path: Path, prefill_per_token_s: float,
                                                compressed: bool) -> None:
    """Slow prefill: compressing the retrieved context pays and is done; free prefill: it is declined."""
    config, name, questions = corpus
    config = config.replace(home=tmp_path, chroma_path=config.chroma_dir, compression_margin_s=0.0)
    backend = FakeBackend(prefill_per_token_s=prefill_per_token_s)
    runtime = runtime_for(config, backend, save_runs=False)
    trace = asyncio.run(run("answer", questions[0]["question"], runtime, collection=name))
    ctx = trace.calls[0].extra["context"]
    decision = ctx["decision"]
    assert (tmp_path / "cost_models.json").is_file()  # measured on this backend, not given
    assert ctx["compressed"] is compressed and decision["compress"] is compressed
    assert decision["predicted_cost_s"] > 0
    if compressed:
        assert decision["predicted_saving_s"] > decision["predicted_cost_s"]
        assert ctx["tokens_after"] < ctx["tokens_before"] and ctx["actual_s"] > 0
        assert ctx["prompt_tokens_after"] < ctx["prompt_tokens_before"]
    else:
        assert ctx["reason"].startswith("saves") and ctx["tokens_after"] == ctx["tokens_before"]


def _function_agent(fn: Any) -> Any:
    from vivace.agents.registry import FunctionAgent

    return FunctionAgent(fn, "quoting", "quotes a chunk")
