"""One pipeline step around its agent's node: inputs and history in; timing, attribution, errors, routing out.

Why its own module: both ways of running a pipeline (``vivace.agents.pipeline.dataflow``
and ``vivace.agents.pipeline.supersteps``) call a step the same way, with the run's
state, and get back the same update; what a step reads, which runs it depends
on (the critical path's edges), how its failure is named and whether its
loop is taken are decided here once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from vivace.agents.base import AgentContext, NodeResult, StepInput, current_step, enter_step, leave_step
from vivace.agents.history import render_history
from vivace.agents.journal import Approval, ApprovalPending, current_journal
from vivace.agents.pipeline.state import BranchState, PipelineState, _bound, parse_items
from vivace.errors import RunError, VivaceError, missing_extra

if TYPE_CHECKING:
    from vivace.agents.pipeline.spec import Pipeline, Step

log = logging.getLogger(__name__)


class StepNode:
    """Wraps an agent's node: inputs and history in, timing/attribution/errors/routing out."""

    def __init__(self, pipe: Pipeline, step: Step, node: Any, ctx: AgentContext, scope: int) -> None:
        self.pipe, self.step, self.node, self.ctx, self.scope = pipe, step, node, ctx, scope
        self.downstream = pipe.downstream(step.name)
        self.__name__ = step.name

    def _inputs(self, state: PipelineState) -> dict[str, Any]:
        outputs = state.get("outputs") or {}
        name = self.step.name
        order = [*self.pipe.preds(name), name, *(lp.source for lp in self.pipe.loops if lp.target == name)]
        inputs: dict[str, Any] = {}
        for src in dict.fromkeys(order):
            if src in outputs and (src != name or not (self.step.fan_out or self.step.per_item)):
                value = outputs[src]
                if self.step.per_item and isinstance(value, dict):  # its own branch only
                    inputs[src] = value.get(state.get("branch"), "")
                else:
                    inputs[src] = [value[k] for k in sorted(value)] if isinstance(value, dict) else value
        return inputs

    def _deps(self, inputs: dict[str, Any], branch: int | None) -> list[int]:
        """The latest runs of the steps this one reads: edges of the critical path."""
        deps: list[int] = []
        for src in inputs:
            runs = [r for r in self.ctx.tracer.runs if r.scope == self.scope and r.step == src and r.ended_at
                    and (not self.step.per_item or r.branch == branch)]
            if runs:
                last = max(r.round for r in runs)
                deps += [r.id for r in runs if r.round == last]
        return deps

    async def __call__(self, state: BranchState) -> dict[str, Any]:
        step, ctx = self.step, self.ctx
        rnd = (state.get("counts") or {}).get(step.name, 0)
        each = step.fan_out or step.per_item
        branch = state.get("branch") if each else None
        inputs = self._inputs(state)
        place = step_key(step.name, rnd, branch)
        journal = current_journal()
        saved = await journal.restore(place) if journal is not None else None
        if saved is None and step.requires_approval and journal is not None:
            await self._approve(journal, place, branch)  # before the step's clock: a person's time is not the step's
        run = ctx.tracer.start(self.scope, step.name, step.agent, branch, rnd, self._deps(inputs, branch), place)
        if saved is not None:  # finished before the run was stopped: its output, not a second run
            run.extra["resumed"] = {"seconds": saved.get("seconds"), "calls": saved.get("calls")}
            ctx.tracer.finish(run, saved.get("text", ""))
            return dict(saved["update"])
        run.downstream = self.downstream
        item = state.get("item") if each else None
        history = render_history(inputs, step.name)
        run.query, run.history = item or state["task"], history  # what this step's calls retrieve for and may compress
        run.model, run.sampling = step.model, step.sampling.as_dict()  # what they run on, and their sampling defaults
        run.tools = list(step.tools)  # what they may call
        token = enter_step(run)
        try:
            inp = StepInput(task=state["task"], step=step.name, agent=step.agent, inputs=inputs, history=history,
                            item=item, branch=branch, round=rnd, messages=list(state.get("messages") or []),
                            params=dict(step.params))
            raw = await self.node.ainvoke(inp) if hasattr(self.node, "ainvoke") else await self.node(inp)
        except ApprovalPending:  # a tool of this step waits for a person: the step runs again on resume
            ctx.tracer.fail(run, "paused for approval")
            raise
        except RunError as exc:
            ctx.tracer.fail(run, str(exc))
            raise
        except Exception as exc:  # CancelledError is not an Exception: Ctrl-C cancels every branch
            message = missing_extra(exc) or str(exc) or type(exc).__name__
            ctx.tracer.fail(run, message)
            where = f"step {step.name!r}" + (f" branch {branch}" if branch is not None else "")
            code = exc.exit_code if isinstance(exc, VivaceError) else 1
            raise RunError(f"agent {step.agent!r} failed ({where}): {message}", step.agent, step.name,
                           exit_code=code) from exc
        finally:
            leave_step(token)
        text, items, decision = _normalize(raw)
        ctx.tracer.finish(run, text)
        update: dict[str, Any] = {
            "outputs": {step.name: {branch: text} if each else text},
            "counts": {step.name: rnd + 1},
            "decisions": {step.name: decision},
            "messages": [{"step": step.name, "agent": step.agent, "branch": branch, "round": rnd, "content": text}],
        }
        if any(t for t in self.pipe.succs(step.name) if self.pipe.steps[t].fan_out):
            update["items"] = {step.name: items if items is not None else parse_items(text)}
        route = None
        for lp in self.pipe.loops:
            key = f"{lp.source}->{lp.target}"
            taken = (state.get("loops") or {}).get(key, 0)
            if lp.source == step.name and decision == lp.when.lower() and taken < _bound(lp, ctx):
                route = lp.target
                update["loops"] = {key: taken + 1}
                log.debug("step %s sends the run back to %s (round %d)", step.name, lp.target, taken + 1)
                break
        update["routes"] = {step.name: route}
        if journal is not None:
            await journal.save(place, {"update": update, "text": text, "seconds": round(run.seconds, 6),
                                     "calls": run.calls, "output_tokens": run.output_tokens})
        return update

    async def _approve(self, journal: Any, key: str, branch: int | None) -> None:
        step = self.step
        what = f"run step {step.name!r} (agent {step.agent})" + (f" branch {branch}" if branch else "")
        if not await journal.approval(Approval(key, "step", step.name, what)):  # or ApprovalPending: the run pauses
            raise RunError(f"step {step.name!r} was not approved", step.agent, step.name)


def step_key(name: str, rnd: int, branch: int | None) -> str:
    """A step execution's place in the run, under the step that encloses it (``vivace.agents.journal``)."""
    parent = current_step()
    own = f"{name}.{rnd}" + (f".{branch}" if branch is not None else "")
    return f"{parent.key}/{own}" if parent is not None and parent.key else own


def _normalize(raw: Any) -> tuple[str, list[str] | None, str | None]:
    """A node's return value (text or a ``NodeResult``) as (text, items, decision)."""
    if isinstance(raw, NodeResult):
        return raw.output, list(raw.items) if raw.items is not None else None, raw.decision
    if isinstance(raw, dict):  # the old spelling of a NodeResult
        raise TypeError(f"a node returns text or a NodeResult, not a dict (keys: {', '.join(map(str, raw))}); "
                        "return NodeResult(output=..., items=..., decision=...)")
    if raw is None:
        return "", None, None
    return str(raw), None, None
