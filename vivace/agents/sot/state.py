"""One SoT run's state and context: what its graph checkpoints, and what its nodes share but must not.

Why its own module: the controller (``vivace.agents.sot.controller``), its points
stage (``vivace.agents.sot.points``) and SoT inside agents (``vivace.agents.sot.long_form``) all build or read
them; the controller module stays its nodes and graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, TypedDict

from vivace.agents.base import AgentContext
from vivace.agents.events import StepEvent
from vivace.agents.sot.length_plan import LengthPlan
from vivace.agents.sot.options import SotOptions
from vivace.runtime.call import Call
from vivace.runtime.load import Claim
from vivace.trace import CallTrace

AGENT = "sot"


@dataclass
class Context:
    """What every node of one run needs and LangGraph should not checkpoint."""

    agent: AgentContext
    options: SotOptions
    emit: Callable[[StepEvent], None]
    step: str = AGENT
    name: str = AGENT
    claim: Claim | None = None  # batch slots claimed by a load-aware decision, released as calls start
    plan: LengthPlan | None = None  # the run's length plan (vivace.agents.sot.length_plan), set when it routes to SoT
    stages: dict[str, float] = field(default_factory=dict)  # stage times outside the state (the route, an edge)

    def release(self, keep: int | None = None) -> None:
        """One claimed slot became a request; with ``keep``, hold only that many (the rest went unused)."""
        if self.claim is not None:
            self.claim.release(1 if keep is None else max(0, self.claim.slots - keep))

    def node(self, stage: str) -> str:
        """A call's node name: the stage, prefixed by the step when SoT is one step of a larger pipeline."""
        return stage if self.step == AGENT else f"{self.step}/{stage}"

    async def send(self, call: Call, on_text: Callable[[str], None]) -> tuple[Any, CallTrace]:
        return await self.agent.send(call, on_text)

    def _part(self, part: str) -> tuple[Any, str | None]:
        """The run's journal and the key of ``part`` of this SoT step (``write.0/skeleton``), if it is saved."""
        from vivace.agents.base import current_step
        from vivace.agents.journal import current_journal

        journal, run = current_journal(), current_step()
        return journal, f"{run.key}/{part}" if journal is not None and run is not None and run.key else None

    async def restore(self, part: str) -> Any | None:
        """What a resumed run's checkpoint holds for ``part`` (the skeleton, a finished point), else None."""
        journal, key = self._part(part)
        return await journal.restore(key) if key else None

    async def keep(self, part: str, value: Any) -> None:
        """``part`` is done: a resume after a kill takes it instead of decoding it again."""
        journal, key = self._part(part)
        if key:
            await journal.save(key, value)


@dataclass
class Expansion:
    index: int
    point: str
    text: str
    error: str | None
    started: float
    ended: float


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    return {**left, **right}


class State(TypedDict, total=False):
    """The graph's state; ``stages`` merges each node's stage times."""

    run_id: str
    question: str
    skeleton: str
    points: list[str]
    fallback: str | None
    stages: Annotated[dict[str, float], _merge]
    answer: str
