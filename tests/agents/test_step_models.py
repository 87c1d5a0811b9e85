"""A model per step: steps name their model and sampling (code and TOML), calls go there, the run reports per model.

Two named FakeBackends stand in for two models: only routing, precedence,
validation and the per-agent/per-model breakdown are under test here. The
same on the real engine, in two configurations, is tests/agents/test_models_engine.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import VIVACE, cli_env
from vivace.agents.base import Agent, AgentContext, Node, StepInput
from vivace.agents.driver import run, run_record
from vivace.agents.pipeline.spec import Pipeline, Step
from vivace.agents.sampling import Sampling
from vivace.assembly import runtime_for
from vivace.config import Config
from vivace.errors import InputError
from vivace.runtime.call import Call
from vivace.runtime.fake import FakeBackend

CONFIG = Config(backend="fake", max_tokens=64, temperature=0.0, models={"small": {"backend": "fake"}})


class Caller(Agent):
    """Calls the model once through ``ctx.call`` with whatever arguments the test gives it."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        self.name, self.kwargs = name, kwargs

    def build(self, ctx: AgentContext) -> Node:
        async def node(inp: StepInput) -> str:
            result = await ctx.call([{"role": "user", "content": f"{self.name}: {inp['task']}"}], **self.kwargs)
            return result.text

        return node


class Sender(Agent):
    """Sends a fully built Call through ``ctx.send``, as the SoT controller does."""

    name = "sender"

    def build(self, ctx: AgentContext) -> Node:
        async def node(inp: StepInput) -> str:
            result, _ = await ctx.send(Call([{"role": "user", "content": inp["task"]}], max_tokens=8, node=inp["step"],
                                            agent=self.name))
            return result.text

        return node


def two_models() -> tuple[FakeBackend, FakeBackend, Any]:
    main, small = FakeBackend(model="main"), FakeBackend(model="tiny")
    return main, small, runtime_for(CONFIG, main, models={"small": small}, save_runs=False)


def test_each_step_runs_on_its_model_with_its_sampling() -> None:
    main, small, runtime = two_models()
    pipe = Pipeline("two", [
        Step("plan", "planner", impl=Caller("planner", max_tokens=200), model="small",
             sampling={"temperature": 0.2, "max_tokens": 32, "top_p": 0.9, "seed": 7, "repetition_penalty": 1.05}),
        Step("write", "writer", impl=Caller("writer", temperature=0.7, max_tokens=16),
             sampling={"temperature": 0.3, "max_tokens": 40}),
        Step("send", "sender", impl=Sender(), model="small"),
    ], [("plan", "write"), ("write", "send")])
    trace = asyncio.run(run(pipe, "Explain tides", runtime))
    (plan, send), (write,) = small.requests, main.requests
    # the step's sampling is the default below the agent's own arguments; max_tokens is the smallest cap
    assert (plan.temperature, plan.max_tokens, plan.top_p, plan.seed, plan.repetition_penalty) == (0.2, 32, 0.9, 7, 1.05)
    assert (write.temperature, write.max_tokens, write.top_p, write.seed) == (0.7, 16, 1.0, None)
    assert send.max_tokens == 8  # a fully built Call keeps its sampling, and goes to the step's model
    assert [(c.node, c.model, c.served_by) for c in trace.calls] == [
        ("plan", "small", "fake:tiny"), ("write", "default", "fake:main"), ("send", "small", "fake:tiny")]
    steps = {s["step"]: s for s in trace.steps}
    assert steps["plan"]["model"] == "small" and steps["write"]["model"] is None


def test_the_run_reports_tokens_calls_seconds_and_queue_per_agent_and_per_model() -> None:
    main, small, runtime = two_models()
    pipe = Pipeline("two", [Step("a", "a", impl=Caller("a"), model="small"), Step("b", "b", impl=Caller("b")),
                            Step("c", "c", impl=Caller("c"), model="small")], [("a", "b"), ("a", "c")],
                    output="c")
    record = run_record(asyncio.run(run(pipe, "Explain tides", runtime)))
    calls = record["calls"]
    models = {m["name"]: m for m in record["models"]}
    assert set(models) == {"small", "default"}
    for name, m in models.items():
        mine = [c for c in calls if c["model"] == name]
        assert m["calls"] == len(mine) and m["output_tokens"] == sum(c["output_tokens"] for c in mine) > 0
        assert m["prompt_tokens"] == sum(c["prompt_tokens"] for c in mine)
        assert m["queue_s"] == round(sum(c["queue_s"] for c in mine), 6)
        assert m["call_s"] == round(sum(c["e2e_s"] for c in mine), 6)
    assert models["small"]["agents"] == ["a", "c"] and models["default"]["agents"] == ["b"]
    assert (models["small"]["backend"], models["small"]["model"], models["small"]["served_by"]) == ("fake", "tiny", "fake:tiny")
    agents = {a["name"]: a for a in record["agents"]}
    assert agents["a"]["models"] == ["small"] and agents["b"]["models"] == ["default"]
    assert all("queue_s" in a for a in agents.values())
    assert "models" not in record["meta"]


def test_a_nested_pipeline_inherits_the_enclosing_steps_model_and_sampling() -> None:
    main, small, runtime = two_models()
    inner = Pipeline("inner", [Step("x", "x", impl=Caller("x"), sampling={"max_tokens": 9}),
                               Step("y", "y", impl=Caller("y"), model="default")], [("x", "y")])
    outer = Pipeline("outer", [Step("wrap", "inner", impl=inner, model="small", sampling={"temperature": 0.4})])
    trace = asyncio.run(run(outer, "Explain tides", runtime))
    assert [(c.node, c.model) for c in trace.calls] == [("x", "small"), ("y", "default")]
    (x,), (y,) = small.requests, main.requests
    assert (x.temperature, x.max_tokens) == (0.4, 9)  # inherited temperature, its own cap
    assert (y.temperature, y.max_tokens) == (0.4, 64)


def test_the_runs_default_model_and_cap() -> None:
    main, small, runtime = two_models()
    pipe = Pipeline("p", [Step("a", "a", impl=Caller("a"), sampling={"max_tokens": 50})])
    trace = asyncio.run(run(pipe, "Explain tides", runtime, options={"model": "small", "max_tokens": 20}))
    assert [c.model for c in trace.calls] == ["small"] and not main.requests
    assert small.requests[0].max_tokens == 20  # the run's cap bounds the step's


def test_an_unknown_model_fails_before_any_call() -> None:
    main, small, runtime = two_models()
    inner = Pipeline("inner", [Step("deep", "x", impl=Caller("x"), model="large")])
    pipe = Pipeline("p", [Step("a", "a", impl=Caller("a")), Step("b", "inner", impl=inner)], [("a", "b")])
    with pytest.raises(InputError, match=r"pipeline 'inner', step 'deep': unknown model 'large'; models: default, small"):
        asyncio.run(run(pipe, "Explain tides", runtime))
    with pytest.raises(InputError, match="the run's default model: unknown model 'big'"):
        asyncio.run(run(Pipeline("q", [Step("a", "a", impl=Caller("a"))]), "Explain tides", runtime,
                        options={"model": "big"}))
    with pytest.raises(InputError, match=r"step 'a': sampling.top_p must be greater than 0 and at most 1, got 2"):
        asyncio.run(run(Pipeline("q", [Step("a", "a", impl=Caller("a"), sampling={"top_p": 2})]), "t", runtime))
    assert not main.requests and not small.requests


def test_pipeline_file_keys(tmp_path: Path) -> None:
    file = tmp_path / "p.toml"
    file.write_text('edges = [["plan", "write"]]\n[steps]\n'
                    'plan = { agent = "planner", model = "small", sampling = { temperature = 0.2, max_tokens = 128.0 } }\n'
                    'write = "writer"\n')
    pipe = Pipeline.from_toml(file)
    assert (pipe.steps["plan"].model, pipe.steps["plan"].sampling) == ("small", Sampling(temperature=0.2, max_tokens=128))
    assert pipe.steps["plan"].sampling.as_dict() == {"max_tokens": 128, "temperature": 0.2}  # a whole 128.0 is an int
    assert (pipe.steps["write"].model, pipe.steps["write"].sampling) == (None, Sampling())


@pytest.mark.parametrize("spec, message", [
    ('{ agent = "writer", model = 3 }', "step 'w': model must be a model name"),
    ('{ agent = "writer", model = "" }', "step 'w': model must be a model name"),
    ('{ agent = "writer", sampling = 0.2 }', "step 'w': sampling must be a table"),
    ('{ agent = "writer", sampling = { tempr = 0.2 } }', "step 'w': sampling: unknown key 'tempr' (did you mean 'temperature'?)"),
    ('{ agent = "writer", sampling = { max_tokens = 0 } }', "step 'w': sampling.max_tokens must be at least 1, got 0"),
    ('{ agent = "writer", sampling = { max_tokens = 1.5 } }', "step 'w': sampling.max_tokens must be a whole number"),
    ('{ agent = "writer", sampling = { temperature = "hot" } }', "step 'w': sampling.temperature must be a number"),
    ('{ agent = "writer", sampling = { temperature = nan } }', "step 'w': sampling.temperature must be a number"),
    ('{ agent = "writer", sampling = { seed = true } }', "step 'w': sampling.seed must be a whole number"),
    ('{ agent = "writer", sampling = { repetition_penalty = 0 } }', "sampling.repetition_penalty must be greater than 0"),
])
def test_bad_step_keys_are_one_line_naming_file_and_step(tmp_path: Path, spec: str, message: str) -> None:
    file = tmp_path / "p.toml"
    file.write_text(f"[steps]\nw = {spec}\n")
    with pytest.raises(InputError) as err:
        Pipeline.from_toml(file)
    assert str(err.value).startswith(f"{file}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_vivace_run_with_two_named_models(tmp_path: Path) -> None:
    """The command: an unknown step model fails before any backend starts; a good run prints and records per model."""
    (tmp_path / "vivace.toml").write_text('backend = "fake"\n[models.small]\nbackend = "fake"\n')
    pipe = tmp_path / "p.toml"
    pipe.write_text('edges = [["plan", "write"]]\n[steps]\nplan = { agent = "planner", model = "small" }\n'
                    'write = "writer"\n')

    def vivace(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VIVACE, *args], capture_output=True, text=True, env=cli_env(tmp_path), timeout=300,
                              cwd=tmp_path)

    out = vivace("run", str(pipe), "Explain tides", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout.strip().splitlines()[-1])
    # The plan is decoded under its schema in one call, on the step's model.
    assert [(m["name"], m["agents"], m["calls"]) for m in record["models"]] == [("small", ["planner"], 1),
                                                                               ("default", ["writer"], 1)]
    out = vivace("run", str(pipe), "Explain tides")
    assert out.returncode == 0, out.stderr
    assert "models" in out.stdout and "queue s" in out.stdout and "small" in out.stdout
    out = vivace("run", "writer", "Explain tides", "--default-model", "small", "--json")
    assert [m["name"] for m in json.loads(out.stdout.strip().splitlines()[-1])["models"]] == ["small"]
    pipe.write_text('[steps]\nplan = { agent = "planner", model = "smal" }\n')
    out = vivace("run", str(pipe), "Explain tides")
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: pipeline 'p', step 'plan': unknown model 'smal'; models: default, small "
                                  "(add a [models.NAME] table to the config)")
