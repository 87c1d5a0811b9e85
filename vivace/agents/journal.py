"""A run's journal: what each finished step produced, saved as it finishes, and taken back on resume.

Why keys and not a state: a step's key is its place in the run
(``research.0.2`` is branch 2 of the first round of ``research``; a nested
pipeline's and the SoT controller's parts extend their step's key:
``write.0/skeleton``). The executors are deterministic given the steps'
outputs (fan-out items, loop decisions and routes are part of them), so a
resumed run walks the same keys, and a key found in the checkpoint is not
run again: its saved output is the step's. Approvals are keys too: a
decision, once given, is part of the run.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Union

from vivace.choices import Approve

if TYPE_CHECKING:
    from vivace.runtime.checkpoints import RunStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Approval:
    """What waits for a person: a step about to run, or a tool call about to be made."""

    key: str
    kind: str  # "step" | "tool"
    step: str
    what: str  # one line: "run step 'publish' (agent writer)", "call tools.send_mail {...}"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "step": self.step, "what": self.what}


class ApprovalPending(BaseException):
    """The run stops at a checkpoint until someone answers ``approval``.

    A BaseException, as cancellation is: no agent's or tool path's ``except
    Exception`` may turn a pause into a failure.
    """

    def __init__(self, approval: Approval) -> None:
        super().__init__(approval.what)
        self.approval = approval


Approver = Union[str, Callable[[Approval], Union[bool, Awaitable[bool]]], None]  # "all" | "none" | ask | pause


@dataclass
class Journal:
    """One run's saved steps (``store`` is None: nothing is saved, approvals still asked)."""

    run_id: str
    store: "RunStore | None"
    restored: dict[str, Any] = field(default_factory=dict)  # the run resumed from: key -> saved value
    approve: Approver = None
    resumed: list[str] = field(default_factory=list)  # keys taken from ``restored``, in order
    saved: int = 0
    save_s: float = 0.0  # seconds spent saving steps: the checkpoint overhead of this run
    wait_s: float = 0.0  # seconds spent waiting for a person's answer to an approval

    async def restore(self, key: str) -> Any | None:
        """The saved value of ``key`` if the run being resumed finished it, saved again as this run's own."""
        if key not in self.restored:
            return None
        self.resumed.append(key)
        await self.save(key, self.restored[key])  # a resumed run can itself be resumed
        return self.restored[key]

    async def save(self, key: str, value: Any) -> None:
        """``key`` is finished: from now on a resume takes ``value`` instead of running it."""
        if self.store is None:
            return
        t0 = time.perf_counter()
        await self.store.save_step(self.run_id, key, value)
        self.save_s += time.perf_counter() - t0
        self.saved += 1

    async def approval(self, approval: Approval) -> bool:
        """Whether ``approval`` is given: a saved decision, else the approver's, else the run pauses."""
        key = f"{approval.key}/approval"
        saved = await self.restore(key)
        if saved is not None:
            return bool(saved.get("approved"))
        if self.approve is None:
            if self.store is None:
                from vivace.errors import InputError

                raise InputError(f"{approval.what} needs approval, and this run is not checkpointed: "
                                 "pass approve='all'/'none' or turn checkpoints on")
            raise ApprovalPending(approval)
        if self.approve in (Approve.ALL, Approve.NONE):
            approved = self.approve == "all"
        else:
            t0 = time.perf_counter()
            answer = self.approve(approval)  # type: ignore[operator]
            approved = bool(await answer) if asyncio.iscoroutine(answer) or isinstance(answer, asyncio.Future) else bool(answer)
            self.wait_s += time.perf_counter() - t0  # a person's time, not the run's work
        log.info("run %s: %s %s", self.run_id, approval.what, "approved" if approved else "denied")
        await self.save(key, {"approved": approved, "what": approval.what})
        return approved


_CURRENT: contextvars.ContextVar[Journal | None] = contextvars.ContextVar("vivace_journal", default=None)


def current_journal() -> Journal | None:
    return _CURRENT.get()


def enter_journal(journal: Journal | None) -> contextvars.Token[Journal | None]:
    return _CURRENT.set(journal)


def leave_journal(token: contextvars.Token[Journal | None]) -> None:
    _CURRENT.reset(token)


def digest(value: Any) -> str:
    """A short stable fingerprint of JSON-able ``value`` (a point's text, a tool call's arguments)."""
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
