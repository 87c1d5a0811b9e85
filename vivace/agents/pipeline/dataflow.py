"""A pipeline run as dataflow: each step starts as soon as the steps it reads are done.

Why: in supersteps a slow sibling holds back an unrelated fast branch, and a
step after a fan-out waits for every branch even when it reads only one.
Here LangGraph's functional API is the controller: one ``@entrypoint`` runs
every step as a coroutine of its own that waits only for its inputs. A fan-out runs its branches, and each branch flows on through
its per-item chain (map -> per-item chain -> reduce) without waiting for its
siblings; the reduce waits only for what it reads. A bounded loop re-runs its
body (the steps from the loop's target to its source) while the source asks
for it, and steps outside the body read the body's final outputs.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Iterable

from vivace.agents.pipeline.state import PipelineState, _merge

if TYPE_CHECKING:
    from vivace.agents.base import AgentContext
    from vivace.agents.pipeline.spec import Loop, Pipeline
    from vivace.agents.pipeline.step_node import StepNode


async def gather_all(awaitables: Iterable[Awaitable[Any]]) -> None:
    """Run them together; the first failure cancels the rest and is raised as is (no exception group)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def loop_body(pipe: "Pipeline", loop: "Loop") -> set[str]:
    """The steps a loop re-runs: on a path of plain edges from its target to its source."""

    def reach(start: str, nxt: Any) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for m in nxt(todo.pop()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen

    return (reach(loop.target, pipe.succs) & reach(loop.source, pipe.preds)) | {loop.target, loop.source}


class _Flow:
    """One run's bookkeeping: the shared state, and when each step's first and final outputs exist."""

    def __init__(self, pipe: "Pipeline", ctx: "AgentContext", nodes: dict[str, "StepNode"], task: str) -> None:
        self.pipe, self.ctx, self.nodes = pipe, ctx, nodes
        self.state: dict[str, Any] = dict(PipelineState(task=task, outputs={}, items={}, decisions={}, counts={},
                                                        loops={}, routes={}, messages=[]))
        loop = asyncio.get_running_loop()
        self.first = {s: loop.create_future() for s in pipe.steps}  # done once: loop-mates read it
        self.final = {s: loop.create_future() for s in pipe.steps}  # done after its loops settle
        self.bodies = [loop_body(pipe, lp) for lp in pipe.loops]
        self.pending = {s: {i for i, body in enumerate(self.bodies) if s in body} for s in pipe.steps}
        self.left: dict[str, int] = {}  # branches still running in a fan-out group's current execution
        self.rounds = dict.fromkeys(pipe.steps, 0)  # executions so far: every branch of one shares its round

    async def run(self) -> dict[str, Any]:
        await gather_all(self.start(s.name) for s in self.pipe.step_list if not s.per_item)
        return self.state

    def _ready(self, pred: str, succ: str) -> "asyncio.Future[None]":
        together = any(pred in body and succ in body for body in self.bodies)
        return self.first[pred] if together else self.final[pred]

    async def start(self, name: str) -> None:
        await asyncio.gather(*(self._ready(p, name) for p in self.pipe.preds(name)))
        await self.execute(name)
        for i, lp in enumerate(self.pipe.loops):
            if lp.source == name:
                await self._loop(i, lp)

    async def _loop(self, index: int, lp: "Loop") -> None:
        body = self.bodies[index]
        while self.state["routes"].get(lp.source) == lp.target:
            for level in self._levels(body - {lp.source}):
                await gather_all(self.execute(s) for s in level)
            await self.execute(lp.source)
        for s in body:
            self.pending[s].discard(index)
            self._settle(s)

    def _levels(self, steps: set[str]) -> list[list[str]]:
        """``steps`` in dependency order, in waves that may run together (per-item steps ride their fan-out)."""
        todo = {s for s in steps if not self.pipe.steps[s].per_item}
        waves: list[list[str]] = []
        while todo:
            wave = [s for s in self.pipe.steps if s in todo and not any(p in todo for p in self.pipe.preds(s))]
            wave = wave or sorted(todo)
            waves.append(wave)
            todo -= set(wave)
        return waves

    async def execute(self, name: str) -> None:
        """One execution of a step: plain, or a fan-out with its per-item chains."""
        step = self.pipe.steps[name]
        if not step.fan_out:
            await self._step(name)
            self.rounds[name] += 1
            self._executed(name)
            return
        source = self.pipe.preds(name)[0]
        cap = self.ctx.options.max_branches or step.max_branches
        items = ((self.state["items"] or {}).get(source) or [self.state["task"]])[:cap]
        for member in self._group(name):
            self.left[member] = len(items)
        await gather_all(self._branch(name, item, i) for i, item in enumerate(items, 1))

    def _group(self, name: str) -> list[str]:
        out, todo = [], [name]
        while todo:
            out.append(n := todo.pop())
            todo += [t for t in self.pipe.succs(n) if self.pipe.steps[t].per_item]
        return out

    async def _branch(self, name: str, item: str, branch: int) -> None:
        await self._step(name, item, branch)
        self.left[name] -= 1
        if self.left[name] == 0:
            self.rounds[name] += 1
            self._executed(name)
        nxt = [t for t in self.pipe.succs(name) if self.pipe.steps[t].per_item]
        await gather_all(self._branch(t, item, branch) for t in nxt)

    async def _step(self, name: str, item: str | None = None, branch: int | None = None) -> None:
        snapshot = {**self.state, "messages": list(self.state["messages"]),
                    "counts": {**self.state["counts"], name: self.rounds[name]}}
        if branch is not None:
            snapshot.update(item=item, branch=branch)
        update = await self.nodes[name](snapshot)  # type: ignore[arg-type]
        for key, value in update.items():
            if key == "messages":
                self.state["messages"] = self.state["messages"] + value
            else:
                self.state[key] = _merge(self.state.get(key), value)

    def _executed(self, name: str) -> None:
        if not self.first[name].done():
            self.first[name].set_result(None)
        self._settle(name)

    def _settle(self, name: str) -> None:
        if not self.pending[name] and self.first[name].done() and not self.final[name].done():
            self.final[name].set_result(None)


class _Direct:
    """A pipeline of one step and no loop: nothing to schedule, so no graph around the agent's own.

    Why: every run of one agent (``vivace ask``, the SoT controller, which is
    a LangGraph graph itself) is such a pipeline, and an ``@entrypoint``
    around it cost about 0.35 ms a run for nothing it could decide.
    """

    def __init__(self, pipe: "Pipeline", nodes: dict[str, "StepNode"], ctx: "AgentContext") -> None:
        self.pipe, self.nodes, self.ctx = pipe, nodes, ctx
        self.name = f"vivace-pipeline-{pipe.name}"

    async def ainvoke(self, state: dict[str, Any], config: Any = None) -> dict[str, Any]:
        return await _Flow(self.pipe, self.ctx, self.nodes, state["task"]).run()


def dataflow_graph(pipe: "Pipeline", nodes: dict[str, "StepNode"], ctx: "AgentContext") -> Any:
    """The pipeline as a LangGraph ``@entrypoint`` that awaits its steps as plain coroutines.

    A step is not a ``@task``: with no checkpointer a task only added about
    0.3 ms per step execution (its own config, callbacks and retry wrapper),
    and ``_Flow`` already decides when each step runs.
    """
    if len(pipe.steps) == 1 and not pipe.loops:
        return _Direct(pipe, nodes, ctx)
    from langgraph.func import entrypoint

    @entrypoint()
    async def flow(state: dict[str, Any]) -> dict[str, Any]:
        return await _Flow(pipe, ctx, nodes, state["task"]).run()

    flow.name = f"vivace-pipeline-{pipe.name}"
    return flow
