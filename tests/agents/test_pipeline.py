"""Pipelines on FakeBackend: ordering, fan-out, bounds, concurrency, the history hook, errors, validation.

FakeBackend stands in for orchestration only; nothing here judges generated text.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.agents.fakes import research_responder as responder
from vivace.agents.base import AgentContext, NodeResult, StepInput
from vivace.agents.builtin import research_pipeline
from vivace.agents.driver import run as run_target
from vivace.agents.driver import run_record
from vivace.agents.pipeline.spec import Loop, Pipeline, Step
from vivace.agents.registry import REGISTRY, agent
from vivace.assembly import runtime_for
from vivace.config import Config
from vivace.errors import InputError, RunError as AgentError
from vivace.runtime.backend import GenerationRequest
from vivace.runtime.fake import FakeBackend
from vivace.runtime.limits import InFlightLimiter, LimitedBackend

CONFIG = Config(backend="fake", max_tokens=64)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def run_agent(target: Any, task: str, *, backend: Any, config: Config = CONFIG, **kw: Any) -> Any:
    """The run driver on a runtime around ``backend`` that keeps no run records."""
    return run_target(target, task, runtime_for(config, backend, save_runs=False), **kw)


@pytest.fixture
def scratch_agents() -> Iterator[list[str]]:
    """Names registered by a test, removed afterwards (the registry is process-wide)."""
    names: list[str] = []
    yield names
    for name in names:
        REGISTRY.unregister(name)


def steps_of(trace: Any, step: str) -> list[dict[str, Any]]:
    return [s for s in trace.steps if s["step"] == step]


def test_research_runs_every_stage_in_order_and_fans_out() -> None:
    backend = FakeBackend(responder(), latency_s=0.05)
    trace = run(run_agent("research", "Explain tea.", backend=backend, config=CONFIG))
    assert trace.answer == "A draft answer." and trace.error is None
    plan, research, write, review = (steps_of(trace, s) for s in ("plan", "research", "write", "review"))
    assert len(plan) == len(write) == len(review) == 1
    assert sorted(r["branch"] for r in research) == [1, 2, 3]
    assert max(p["ended_at"] for p in plan) <= min(r["started_at"] for r in research)
    assert max(r["ended_at"] for r in research) <= write[0]["started_at"] <= review[0]["started_at"]
    # The researchers were in flight together, and the critical path follows plan -> research -> write -> review.
    calls = [c for c in trace.calls if c.agent == "researcher"]
    assert max(c.started_at for c in calls) < min(c.ended_at for c in calls)
    assert trace.critical_path_s < sum(s["seconds"] for s in trace.steps)
    # Each researcher saw its own sub-question, last in a prompt whose start all of them share.
    requests = [r for r in backend.requests if "/research/" in r.tag]
    assert {r.messages[-1]["content"].rsplit("Sub-question: ", 1)[1] for r in requests} == {"Alpha part", "Beta part", "Gamma part"}
    assert len({r.messages[0]["content"] for r in requests}) == 1
    assert len({r.messages[-1]["content"].rsplit("Sub-question:", 1)[0] for r in requests}) == 1
    # The writer was handed every researcher's notes.
    writer_prompt = next(r for r in backend.requests if r.tag.endswith("/write")).messages[-1]["content"]
    assert all(f"Notes on {p}" in writer_prompt for p in ("Alpha part", "Beta part", "Gamma part"))
    record = run_record(trace)
    assert {a["name"] for a in record["agents"]} == {"planner", "researcher", "writer", "critic"}
    assert next(a for a in record["agents"] if a["name"] == "researcher")["calls"] == 3
    assert record["parallelism"] > 0 and record["critical_path_s"] > 0
    by_id = {s["id"]: s for s in record["steps"]}
    chain = [by_id[i] for i in record["critical_path"]]
    assert [s["step"] for s in chain] == ["plan", "research", "write", "review"]
    assert sum(s["seconds"] for s in chain) == pytest.approx(record["critical_path_s"], abs=1e-5)  # that one is rounded
    assert [m["step"] for m in trace.messages][:1] == ["plan"]


def test_the_critical_path_follows_the_slow_branch_not_the_first() -> None:
    """plan -> (fast a -> a2, slow b) -> join: the chain runs through b, the join waits for it."""
    from vivace.agents.base import StepRun
    from vivace.agents.driver import critical_chain

    def step(id_: int, name: str, start: float, end: float, deps: list[int]) -> StepRun:
        return StepRun(id_, 1, name, name, None, 0, start, deps=deps, ended_at=end)

    runs = [step(1, "plan", 0.0, 1.0, []), step(2, "a", 1.0, 2.0, [1]), step(3, "b", 1.0, 5.0, [1]),
            step(4, "a2", 2.0, 3.5, [2]), step(5, "join", 5.0, 6.0, [3, 4])]
    assert critical_chain(runs) == (6.0, [1, 3, 5])
    runs.append(step(6, "child", 1.0, 9.0, []))
    runs[-1].parent = 3  # a step run inside another (a nested pipeline's) is the parent's time, not a chain of its own
    assert critical_chain(runs) == (6.0, [1, 3, 5]) and critical_chain([]) == (0.0, [])


@pytest.mark.parametrize("rounds", [0, 1, 3])
def test_revision_rounds_are_bounded(rounds: int) -> None:
    backend = FakeBackend(responder(review="revise", fix="be more specific"))
    trace = run(run_agent(research_pipeline(max_rounds=rounds), "Explain tea.", backend=backend, config=CONFIG))
    assert len(steps_of(trace, "write")) == rounds + 1
    assert len(steps_of(trace, "review")) == rounds + 1
    if rounds:  # a revision sees its previous draft and the critique
        last = [r for r in backend.requests if r.tag.endswith("/write")][-1].messages[-1]["content"]
        assert "previous version" in last and "REVISE: be more specific" in last


def test_an_approving_critic_ends_the_loop_and_options_override_bounds() -> None:
    plan = ("Tea origins", "Tea kinds", "Brewing tea", "Tea health", "Tea trade")
    backend = FakeBackend(responder(plan=plan, review="approve"))
    trace = run(run_agent("research", "Explain tea.", backend=backend, config=CONFIG,
                          options={"max_branches": 2, "max_rounds": 5}))
    assert len(steps_of(trace, "research")) == 2
    assert len(steps_of(trace, "write")) == 1
    plan_call = next(r for r in backend.requests if r.tag.endswith("/plan"))
    assert plan_call.output.schema["properties"]["aspects"]["maxItems"] == 2  # the option bounds the schema


def test_the_plan_and_the_verdict_are_decoded_under_schemas_and_repeats_are_dropped() -> None:
    """A plan that repeats an aspect ("Transportation" on every line, as the engine once did) keeps it once."""
    backend = FakeBackend(responder(plan=("Transportation", "transportation.", "Running cost"), review="revise",
                                    fix="add numbers"))
    trace = run(run_agent(research_pipeline(max_rounds=1), "Compare trains and buses.", backend=backend, config=CONFIG))
    questions = sorted(r.messages[-1]["content"].rsplit("Sub-question: ", 1)[1]
                       for r in backend.requests if "/research/" in r.tag)
    assert questions == ["Running cost", "Transportation"]
    plan = next(r for r in backend.requests if r.tag.endswith("/plan"))
    assert plan.output.kind == "json" and plan.output.schema["properties"]["aspects"]["minItems"] == 2
    assert plan.prefill is None and plan.repetition_penalty == 1.0
    reviews = [c for c in trace.calls if c.node == "review"]
    assert reviews and all(c.extra["output"]["valid"] for c in reviews)
    last_write = [r for r in backend.requests if r.tag.endswith("/write")][-1].messages[-1]["content"]
    assert "REVISE: add numbers" in last_write  # the writer reads the critic's fix


def test_a_plan_of_one_repeated_aspect_is_asked_for_once_more() -> None:
    """The engine's own failure, replayed: the same aspect twice left one researcher."""
    plans = iter([["Transportation", "Transportation"], ["Commuting time", "Transportation", "Comfort"]])

    def respond(request: GenerationRequest) -> str:
        if request.tag.endswith("/plan"):
            return json.dumps({"aspects": next(plans)})
        return responder()(request)

    backend = FakeBackend(respond)
    run(run_agent("research", "Compare trains and buses.", backend=backend, config=CONFIG))
    asked = [r for r in backend.requests if r.tag.endswith("/plan")]
    assert [r.repetition_penalty for r in asked] == [1.0, 1.15]
    assert "repeats 'Transportation'" in asked[1].messages[-1]["content"]
    questions = sorted(r.messages[-1]["content"].rsplit("Sub-question: ", 1)[1]
                       for r in backend.requests if "/research/" in r.tag)
    assert questions == ["Comfort", "Commuting time", "Transportation"]


def test_a_critic_reply_that_breaks_its_schema_twice_fails_the_step_in_one_line() -> None:
    def respond(request: GenerationRequest) -> str:
        return "Looks fine to me!" if "/review" in request.tag else responder()(request)

    with pytest.raises(AgentError, match="broke its output schema twice") as info:
        run(run_agent("research", "Explain tea.", backend=FakeBackend(respond, grammar=False), config=CONFIG))
    reviews = [c for c in info.value.trace.calls if c.node == "review"]
    assert [c.extra["output"]["valid"] for c in reviews] == [False, False]


def test_independent_agents_run_concurrently_through_the_in_flight_cap(scratch_agents: list[str]) -> None:
    @agent("t_echo", description="echo via the model")
    async def echo(inp: StepInput, ctx: AgentContext) -> str:
        return (await ctx.call([{"role": "user", "content": inp["task"]}])).text

    scratch_agents.append("t_echo")
    limiter = InFlightLimiter(2)
    backend = LimitedBackend(FakeBackend(latency_s=0.1), limiter)
    pipe = Pipeline("wide", [Step(n, "t_echo") for n in ("a", "b", "c", "d")] + [Step("join", "writer")],
                    edges=[(n, "join") for n in "abcd"])
    trace = run(run_agent(pipe, "hello", backend=backend, config=CONFIG))
    entry = [s for s in trace.steps if s["step"] in "abcd"]
    assert max(s["started_at"] for s in entry) < min(s["ended_at"] for s in entry)  # all started together
    assert limiter.peak == 2  # ...but the process-wide cap held the model calls to 2 at a time
    join = steps_of(trace, "join")
    assert len(join) == 1 and join[0]["started_at"] >= max(s["ended_at"] for s in entry)


def test_a_failing_agent_names_itself_and_keeps_the_trace(scratch_agents: list[str]) -> None:
    @agent("t_fail")
    async def fail(inp: StepInput, ctx: AgentContext) -> str:
        """Fails after the planner ran."""
        raise ValueError("disk on fire")

    scratch_agents.append("t_fail")
    pipe = Pipeline("p", [Step("plan", "planner"), Step("oops", "t_fail")], edges=[("plan", "oops")])
    with pytest.raises(AgentError, match=r"agent 't_fail' failed \(step 'oops'\): disk on fire") as info:
        run(run_agent(pipe, "Explain tea.", backend=FakeBackend(responder()), config=CONFIG))
    trace = info.value.trace
    assert trace is not None and "disk on fire" in trace.error
    assert [c.agent for c in trace.calls] == ["planner"]
    assert steps_of(trace, "oops")[0]["error"] == "disk on fire"


def test_a_failing_branch_fails_the_run(scratch_agents: list[str]) -> None:
    @agent("t_picky")
    async def picky(inp: StepInput, ctx: AgentContext) -> str:
        if inp["branch"] == 2:
            raise RuntimeError("branch two broke")
        return (await ctx.call([{"role": "user", "content": inp["item"]}])).text

    scratch_agents.append("t_picky")
    pipe = Pipeline("p", [Step("plan", "planner"), Step("work", "t_picky", fan_out=True)], edges=[("plan", "work")])
    with pytest.raises(AgentError, match=r"'t_picky' failed \(step 'work' branch 2\)"):
        run(run_agent(pipe, "Explain tea.", backend=FakeBackend(responder(), latency_s=0.05), config=CONFIG))


NOTE = " ".join(f"Tea fact {i}: leaves from the hills of region {i} are picked in spring and dried slowly." for i in range(12))


def test_history_compression_is_a_per_call_decision_that_honours_off(tmp_path: Path) -> None:
    """The writer's history (three long notes) is priced per call: off skips, always compresses, auto asks the
    cost model measured on this backend (the real MiniLM coarse stage, the fake backend's prefill)."""
    def respond(request: GenerationRequest) -> str:
        return NOTE if "/research/" in request.tag else responder()(request)

    config = CONFIG.replace(home=tmp_path)
    calls: dict[str, Any] = {}
    prompts: dict[str, str] = {}
    for mode in ("off", "always", "auto"):
        backend = FakeBackend(respond)
        trace = run(run_agent("research", "Explain tea.", backend=backend, config=config, compression=mode,
                              history_budget_tokens=64))
        calls[mode] = next(c.extra["context"] for c in trace.calls if c.agent == "writer")
        prompts[mode] = next(r for r in backend.requests if r.tag.endswith("/write")).messages[-1]["content"]
        planner = next(c.extra["context"] for c in trace.calls if c.agent == "planner")
        assert not planner["compressed"] and "no history" in planner["reason"]
    assert calls["off"]["reason"] == "compression is off" and not calls["off"]["compressed"]
    assert calls["always"]["compressed"] and calls["always"]["tokens_after"] < calls["always"]["tokens_before"]
    assert len(prompts["always"]) < len(prompts["off"]) and "## research, part 3\nTea fact 0" in prompts["off"]
    auto = calls["auto"]
    # zero-latency prefill saves nothing measurable, so the measured model declines, and says why
    assert not auto["compressed"] and auto["reason"].startswith("saves") and auto["decision"]["mode"] == "auto"
    assert (tmp_path / "cost_models.json").is_file()


def test_sot_runs_as_an_agent() -> None:
    def sot_responder(request: GenerationRequest) -> str:
        if request.tag.endswith("/skeleton"):
            return " Boil water\n2. Steep leaves\n3. Pour"
        return ": Detail."

    trace = run(run_agent("sot", "How do I make tea?", backend=FakeBackend(sot_responder), config=CONFIG,
                          options={"mode": "sot", "length_plan": False}))
    assert {c.agent for c in trace.calls} == {"sot"}
    assert sum(1 for c in trace.calls if "expand" in c.node) == 3 and trace.answer


def test_a_sot_step_in_a_pipeline_fills_the_runs_typed_sot_record() -> None:
    """SoT's record is the run's ``router``, ``points`` and ``sot``, not ``meta``, inside a pipeline too."""
    def sot_responder(request: GenerationRequest) -> str:
        if request.tag.endswith("/skeleton"):
            return " Boil water\n2. Steep leaves\n3. Pour"
        return ": Detail."

    pipe = Pipeline("tea", [Step("first", "answer"), Step("tips", "sot")], edges=[("first", "tips")])
    trace = run(run_agent(pipe, "How do I make tea?", backend=FakeBackend(sot_responder), config=CONFIG,
                          options={"mode": "sot", "length_plan": False}))
    assert trace.mode == "agent:tea" and trace.router["mode"] == "sot" and len(trace.points) == 3
    assert trace.sot["mode"] == "sot" and trace.sot["requested_mode"] == "sot" and trace.sot["skeleton"]
    assert trace.sot["fallback"] is None and trace.sot["failed_points"] == {} and "total" in trace.sot["stages"]
    assert not {"mode", "router", "points", "skeleton", "fallback", "failed_points", "stages"} & set(trace.meta)
    record = json.loads(json.dumps(run_record(trace)))
    assert record["sot"]["stages"].keys() == trace.sot["stages"].keys() and "stages" not in record["meta"]


def test_pipeline_from_toml_with_a_nested_pipeline(tmp_path: Path) -> None:
    file = tmp_path / "brief.toml"
    file.write_text(
        'name = "brief"\noutput = "final"\nedges = [["first", "final"]]\n'
        '[steps]\nfirst = "answer"\nfinal = { agent = "research" }\n'
    )
    trace = run(run_agent(str(file), "Explain tea.", backend=FakeBackend(responder()), config=CONFIG))
    assert trace.agent == "brief" and trace.answer == "A draft answer."
    assert {c.agent for c in trace.calls} == {"answer", "planner", "researcher", "writer", "critic"}
    top = [s for s in trace.steps if s["parent"] is None]
    assert [s["step"] for s in top] == ["first", "final"]


@pytest.mark.parametrize(
    "pipe, message",
    [
        (Pipeline("p", [Step("a", "nope")]), r"step 'a': unknown agent 'nope'; available: .*answer.*research"),
        (Pipeline("p", [Step("a", "answer"), Step("b", "answer")], edges=[("a", "b"), ("b", "a")]),
         r"loop without a bound: a -> b -> a"),
        (Pipeline("p", [Step("a", "answer"), Step("b", "critic")], edges=[("a", "b")], loops=[Loop("b", "a")]),
         r"loop without a bound: b -> a needs max_rounds"),
        (Pipeline("p", [Step("w", "writer"), Step("a", "answer")], edges=[], output="w"),
         r"missing input: step 'w' \(agent 'writer'\)"),
        (Pipeline("p", [Step("a", "answer"), Step("f", "answer", fan_out=True)]),
         r"missing input: fan-out step 'f'"),
        (Pipeline("p", [Step("a", "answer"), Step("b", "answer")]), r"ends in several steps \(a, b\)"),
        (Pipeline("p", [Step("a", "answer")], edges=[("a", "zz")]), r"names no step 'zz'"),
    ],
)
def test_validation_errors(pipe: Pipeline, message: str) -> None:
    with pytest.raises(InputError, match=message):
        pipe.validate()


def test_bad_pipeline_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[steps]\na = { agent = "answer", fanout = true }\n')
    with pytest.raises(InputError, match="unknown key"):
        Pipeline.from_toml(bad)
    with pytest.raises(InputError, match="pipeline file not found"):
        Pipeline.from_toml(tmp_path / "missing.toml")


def test_empty_task_and_unknown_agent_fail_before_any_call() -> None:
    backend = FakeBackend()
    with pytest.raises(InputError, match="empty"):
        run(run_agent("answer", "  ", backend=backend, config=CONFIG))
    with pytest.raises(InputError, match="unknown agent 'nope'; available: answer"):
        run(run_agent("nope", "hi", backend=backend, config=CONFIG))
    assert backend.requests == []


def test_tracer_events_carry_every_call() -> None:
    seen: list[Any] = []
    trace = run(run_agent("research", "Explain tea.", backend=FakeBackend(responder()), config=CONFIG,
                          on_event=seen.append))
    kinds = [e.kind for e in seen]
    assert kinds.count("agent_started") == kinds.count("agent_done") == len(trace.steps)
    assert "agent_delta" in kinds
    done = {(e.step, e.branch, e.round): e for e in seen if e.kind == "agent_done"}
    for step in trace.steps:  # each step's event carries the calls the trace gives it
        assert done[(step["step"], step["branch"], step["round"])].calls == step["calls"] >= 1


def test_step_params_from_toml_reach_the_agent(tmp_path: Path, scratch_agents: list[str]) -> None:
    seen: list[dict[str, Any]] = []

    @agent("params_probe")
    async def probe(inp: StepInput, ctx: AgentContext) -> str:
        seen.append(inp["params"])
        return "ok"

    scratch_agents.append("params_probe")
    file = tmp_path / "p.toml"
    file.write_text('[steps]\nonly = { agent = "params_probe", params = { language = "de", rounds = 2 } }\n')
    run(run_agent(str(file), "Hallo.", backend=FakeBackend(responder())))
    assert seen == [{"language": "de", "rounds": 2}]
    file.write_text('[steps]\nonly = { agent = "params_probe", params = "de" }\n')
    with pytest.raises(InputError, match=r"step 'only': params must be a table"):
        Pipeline.from_toml(file)


def _map_reduce(slow: float = 0.3) -> Pipeline:
    """split -> map (fan-out) -> refine (per item) -> reduce; item "a" maps slowly, "b" and "c" quickly."""

    @agent("df_split")
    async def split(inp: StepInput, ctx: AgentContext) -> NodeResult:
        return NodeResult("a b c", items=("a", "b", "c"))

    @agent("df_map")
    async def mapper(inp: StepInput, ctx: AgentContext) -> str:
        await asyncio.sleep(slow if inp["item"] == "a" else 0.01)
        return f"m({inp['item']})"

    @agent("df_refine", needs_input=True)
    async def refine(inp: StepInput, ctx: AgentContext) -> str:
        await asyncio.sleep(0.01)
        return f"r({inp['inputs']['map']},{inp['item']})"

    @agent("df_reduce", needs_input=True)
    async def reduce(inp: StepInput, ctx: AgentContext) -> str:
        return "+".join(inp["inputs"]["refine"])

    return Pipeline("mr", [Step("split", "df_split"), Step("map", "df_map", fan_out=True),
                           Step("refine", "df_refine", per_item=True), Step("reduce", "df_reduce")],
                    edges=[("split", "map"), ("map", "refine"), ("refine", "reduce")])


def test_dataflow_lets_each_branch_flow_on_and_supersteps_do_not(scratch_agents: list[str]) -> None:
    pipe = _map_reduce()
    scratch_agents += ["df_split", "df_map", "df_refine", "df_reduce"]
    traces = {ex: run(run_agent(pipe, "go", backend=FakeBackend(), options={"execution": ex}))
              for ex in ("dataflow", "supersteps")}
    for ex, trace in traces.items():
        assert trace.answer == "r(m(a),a)+r(m(b),b)+r(m(c),c)", ex  # same result, branch order kept
    for ex, trace in traces.items():
        runs = {(s["step"], s["branch"]): s for s in trace.steps}
        slow_map_end = runs[("map", 1)]["ended_at"]
        fast_refine_start = runs[("refine", 2)]["started_at"]
        assert (fast_refine_start < slow_map_end) == (ex == "dataflow"), ex
        # each refine run depends on its own branch's map run only: the critical path follows the branch
        assert runs[("refine", 2)]["deps"] == [runs[("map", 2)]["id"]]
        assert sorted(runs[("reduce", None)]["deps"]) == sorted(runs[("refine", b)]["id"] for b in (1, 2, 3))


def test_a_step_after_a_slow_sibling_waits_only_for_its_own_input(scratch_agents: list[str]) -> None:
    """start -> slow, start -> fast -> after: in dataflow `after` does not wait for `slow` (LangGraph #6320)."""

    @agent("df_wait")
    async def wait(inp: StepInput, ctx: AgentContext) -> str:
        await asyncio.sleep(float(inp["params"].get("s", 0)))
        return inp["step"]

    scratch_agents.append("df_wait")
    pipe = Pipeline("sib", [Step("start", "df_wait"), Step("slow", "df_wait", params={"s": 0.3}),
                            Step("fast", "df_wait"), Step("after", "df_wait")],
                    edges=[("start", "slow"), ("start", "fast"), ("fast", "after")], output="after")
    for ex in ("dataflow", "supersteps"):
        trace = run(run_agent(pipe, "go", backend=FakeBackend(), options={"execution": ex}))
        runs = {s["step"]: s for s in trace.steps}
        assert (runs["after"]["started_at"] < runs["slow"]["ended_at"]) == (ex == "dataflow"), ex


@pytest.mark.parametrize("execution", ["dataflow", "supersteps"])
def test_revision_loop_under_both_executions(execution: str) -> None:
    trace = run(run_agent(research_pipeline(max_rounds=2), "Explain tea.", backend=FakeBackend(responder(review="revise", fix="more")),
                          options={"execution": execution}))
    steps = [(s["step"], s["round"]) for s in trace.steps if s["branch"] is None]
    assert steps == [("plan", 0), ("write", 0), ("review", 0), ("write", 1), ("review", 1), ("write", 2),
                     ("review", 2)]


def test_per_item_and_execution_are_checked() -> None:
    with pytest.raises(InputError, match=r"per-item step 'b' needs exactly one incoming edge, from a fan-out"):
        Pipeline("p", [Step("a", "answer"), Step("b", "answer", per_item=True)], edges=[("a", "b")]).validate()
    with pytest.raises(InputError, match="execution must be one of dataflow, supersteps"):
        run(run_agent("answer", "hi", backend=FakeBackend(), options={"execution": "magic"}))


def test_each_call_gets_a_priority_from_its_place_in_the_program() -> None:
    """critical: steps with more still downstream go first; fcfs: all equal; the SoT skeleton before its points."""
    config = Config(backend="fake", max_tokens=64, scheduling="critical")
    trace = run(run_agent(research_pipeline(), "Explain tea.", backend=FakeBackend(responder()), config=config))
    by_agent = {c.agent: c.extra["priority"] for c in trace.calls}
    assert by_agent == {"planner": -3, "researcher": -2, "writer": -1, "critic": 0}
    def sot_responder(request: GenerationRequest) -> str:
        return " Boil water\n2. Steep leaves" if request.tag.endswith("/skeleton") else ": Detail."

    sot = run(run_agent("sot", "Explain tea.", backend=FakeBackend(sot_responder), config=config,
                        options={"mode": "sot"}))
    skeleton = [c.extra["priority"] for c in sot.calls if "skeleton" in c.node]
    points = [c.extra["priority"] for c in sot.calls if "expand" in c.node]
    assert skeleton == [-1] and points and set(points) == {0}
    fcfs = run(run_agent(research_pipeline(), "Explain tea.", backend=FakeBackend(responder()),
                         config=Config(backend="fake", max_tokens=64, scheduling="fcfs")))
    assert {c.extra["priority"] for c in fcfs.calls} == {0}


def test_fair_scheduling_lowers_a_run_as_it_uses_the_engine() -> None:
    """fair: each call's priority is the run's attained service so far (finished calls' tokens, in blocks)."""
    from vivace.runtime.priority import SERVICE_BLOCK

    config = Config(backend="fake", max_tokens=64, scheduling="fair")
    trace = run(run_agent(research_pipeline(), "Explain tea. " * 120, backend=FakeBackend(responder()), config=config))
    calls = sorted(trace.calls, key=lambda c: c.started_at)
    assert calls[0].extra["priority"] == 0
    spent = 0
    for c in calls:
        if c.started_at >= calls[0].ended_at and c.agent in ("writer", "critic"):  # sequential: all before it counted
            assert c.extra["priority"] >= spent // SERVICE_BLOCK
        spent += c.prompt_tokens + c.output_tokens
    assert calls[-1].extra["priority"] > 0


def test_the_writer_expands_its_answer_by_sot_when_the_decision_says_so() -> None:
    """long_form: sot expands the writer's answer (skeleton + points inside the write step), auto asks the
    router on the task (a letter stays normal), off never; the decision is recorded on the step run."""

    def respond(request: GenerationRequest) -> str:
        if request.tag.endswith("/skeleton"):
            return " Cost\n2. Speed\n3. Comfort"
        return responder()(request) if "expand" not in request.tag else ": Detail."

    def write_step(trace: Any) -> dict[str, Any]:
        return next(s for s in trace.steps if s["step"] == "write")

    sot = run(run_agent(research_pipeline(), "Compare trains and buses.", backend=FakeBackend(respond),
                        options={"long_form": "sot"}))
    nodes = [c.node for c in sot.calls if c.agent == "writer"]
    plan = write_step(sot)["extra"]["long_form"]["length_plan"]  # as in a SoT run: points and budgets planned
    assert plan["source"] == "prior" and 2 <= plan["points"] <= 3
    assert nodes.count("write/skeleton") == 1 and nodes.count("write/expand") == plan["points"]
    assert write_step(sot)["extra"]["long_form"]["mode"] == "sot" and "Detail." in sot.answer
    letter = run(run_agent(research_pipeline(), "Write a letter to my landlord about the broken heating.",
                           backend=FakeBackend(respond), options={"long_form": "auto"}))
    decision = write_step(letter)["extra"]["long_form"]
    assert decision["mode"] == "normal" and decision["reason"] and letter.answer == "A draft answer."
    off = run(run_agent(research_pipeline(), "Compare trains and buses.", backend=FakeBackend(respond)))
    assert write_step(off)["extra"]["long_form"]["mode"] == "normal" and off.answer == "A draft answer."
    skeleton_prompts = [c for c in sot.calls if c.node == "write/skeleton"]
    assert skeleton_prompts and all(c.prompt_tokens < 200 for c in skeleton_prompts)  # planned from the task alone

    def one_point(request: GenerationRequest) -> str:
        return " Only one point" if request.tag.endswith("/skeleton") else respond(request)

    short = run(run_agent(research_pipeline(), "Compare trains and buses.", backend=FakeBackend(one_point),
                          options={"long_form": "sot"}))
    decision = write_step(short)["extra"]["long_form"]
    assert decision["mode"] == "sot" and decision["fallback"] and decision["points"] == 0
    assert short.answer == "A draft answer."  # the writer's own call, with its own prompt


def test_the_writers_own_answers_size_its_sot_expansions(tmp_path: Path) -> None:
    """A writer's normal answers go to its own length history; the next task's plan reads them (not the
    question's own), and in auto a writer whose answers run short stays normal, with the plan as the reason."""
    from vivace.agents.sot.length_plan import LengthHistory, own_history

    def respond(request: GenerationRequest) -> str:
        if request.tag.endswith("/skeleton"):
            return " Cost\n2. Speed\n3. Comfort"
        return responder()(request) if "expand" not in request.tag else ": Detail."

    runtime = runtime_for(Config(backend="fake", max_tokens=256), FakeBackend(respond), save_runs=False)
    with own_history(LengthHistory(tmp_path, "lengths")) as lengths:  # the runs learn here, not in a home
        tasks = ["What are the main benefits of regular exercise?", "What are the advantages of learning a second language?",
                 "Explain the main ways households can cut their heating costs.",
                 "What should a small bakery consider before opening a second shop?"]  # the router sends each to SoT
        for task in tasks[:3]:
            run(run_target(research_pipeline(), task, runtime, options={"long_form": "off"}))
        writer = lengths.of("agent-writer")
        assert sorted(q for q, _ in writer.rows()) == sorted(tasks[:3]) and lengths.rows() == []
        lengths = {t for _, t in writer.rows()}
        assert len(lengths) == 1 and 0 < min(lengths) < 16  # "A draft answer." each time: a short, whole answer

        def write_step(trace: Any) -> dict[str, Any]:
            return next(s for s in trace.steps if s["step"] == "write")

        auto = run(run_target(research_pipeline(), tasks[3], runtime, options={"long_form": "auto"}))
        decision = write_step(auto)["extra"]["long_form"]
        assert decision["mode"] == "normal" and decision["reason"].startswith("length plan: normal answers")
        assert "(was: classifier: sot" in decision["reason"] and decision["length_plan"]["source"] == "history"
        forced = run(run_target(research_pipeline(), tasks[0], runtime, options={"long_form": "sot"}))
        plan = write_step(forced)["extra"]["long_form"]["length_plan"]
        assert plan["source"] == "history" and plan["expected_tokens"] <= 64  # the plan's floor, not the prior's 256
        assert plan["points"] == 2  # the fewest points: a short answer gets a short expansion


def test_every_run_shares_the_batch_a_pipelines_too() -> None:
    """Two pipelines at once: each writer's fan-out decision counts both runs (its share is half the batch)."""
    from vivace.runtime.load import ledger_of

    def respond(request: GenerationRequest) -> str:
        if request.tag.endswith("/skeleton"):
            return " Cost\n2. Speed\n3. Comfort"
        return responder()(request) if "expand" not in request.tag else ": Detail."

    runtime = runtime_for(CONFIG, FakeBackend(respond, per_token_s=0.005), save_runs=False)
    tasks = ["What are the main benefits of regular exercise?", "What are the advantages of learning a second language?"]

    async def both() -> list[Any]:
        return list(await asyncio.gather(*(run_target(research_pipeline(), t, runtime, options={"long_form": "auto"})
                                           for t in tasks)))

    traces = run(both())
    loads = [next(s for s in t.steps if s["step"] == "write")["extra"]["long_form"]["load"] for t in traces]
    assert [load["runs"] for load in loads] == [2, 2]  # both pipelines were running when each writer decided
    assert ledger_of(runtime.limiter).runs == 0  # and neither counts once it ended


def test_the_mapreduce_example_file_runs_as_dataflow(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "mapreduce.toml"
    pipe = Pipeline.from_toml(example)
    assert pipe.steps["facts"].per_item and pipe.steps["summarize"].fan_out
    folder = Path(__file__).resolve().parents[2] / "vivace_bench" / "data" / "pipeline_docs"
    pipe.steps["split"].params["folder"] = str(folder)  # the file names it relative to the repo
    trace = run(run_agent(pipe, "How should Harwick improve commuting?", backend=FakeBackend()))
    runs = [(s["step"], s["branch"]) for s in trace.steps]
    assert sorted(b for s, b in runs if s == "facts") == [1, 2, 3, 4, 5]
    bad = tmp_path / "bad.toml"
    bad.write_text('[steps]\na = "documents"\nb = { agent = "summarizer", per_item = "yes" }\n')
    with pytest.raises(InputError, match=r"step 'b': per_item must be true or false"):
        Pipeline.from_toml(bad)
    empty = tmp_path / "empty.toml"
    empty.write_text('[steps]\na = { agent = "documents", params = { folder = "nowhere" } }\n')
    with pytest.raises(AgentError, match="documents folder not found"):
        run(run_agent(str(empty), "x", backend=FakeBackend()))


def test_a_node_that_returns_the_old_dict_is_told_to_return_a_node_result(scratch_agents: list[str]) -> None:
    @agent("t_dict")
    async def old(inp: StepInput, ctx: AgentContext) -> Any:
        return {"output": "x", "items": ["a"]}

    scratch_agents.append("t_dict")
    with pytest.raises(AgentError, match="not a dict .*return NodeResult"):
        run(run_agent(Pipeline("p", [Step("s", "t_dict")]), "hello", backend=FakeBackend()))
