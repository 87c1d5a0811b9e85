"""The answer as one ordered text stream, out of a run's events, for clients that read one stream.

Why its own piece: an OpenAI client reads a single text stream, and what it
has read can never be taken back. So only text that is certainly the start of
the final answer is sent:

- normal decoding streams as generated, holding back whitespace at the ends
  (the final answer is stripped);
- SoT points finish out of order; point *i* is sent, formatted exactly as the
  joined answer writes it, as soon as points 1..*i* are done;
- an agent or a pipeline may revise or reshape its text (a critic, a writer
  that sees every branch), so its answer is sent when the run ends.

At the end, whatever of the final answer was not sent yet follows.
"""

from __future__ import annotations

import logging
from typing import Any

from vivace.agents.events import AnswerDelta, AnswerDone, BranchDone, Event
from vivace.agents.sot.skeleton import format_point

log = logging.getLogger(__name__)


class AnswerStream:
    """Feed it every event of a run (``__call__``); ``take()`` returns the text that may be sent now."""

    def __init__(self, streams_answer: bool) -> None:
        self.streams_answer = streams_answer  # False for agents and pipelines: their answer comes at the end
        self.sent = ""
        self._pending: list[str] = []
        self._held = ""  # whitespace that may turn out to end the answer
        self._done: dict[int, str] = {}
        self._next_point = 1

    def __call__(self, event: Event) -> None:
        if not self.streams_answer:
            return
        if isinstance(event, AnswerDelta):
            self._normal(event.text)
        elif isinstance(event, BranchDone):  # pipelined SoT may finish a point before its skeleton is done
            self._done[event.index] = format_point(event.index, event.point, event.text, event.error)
            while self._next_point in self._done:
                piece = self._done.pop(self._next_point)
                self._emit(piece if self._next_point == 1 else "\n" + piece)
                self._next_point += 1
        elif isinstance(event, AnswerDone):
            self.finish(event.answer)

    def _normal(self, text: str) -> None:
        text = self._held + text
        if not self.sent and not self._pending:
            text = text.lstrip()
        body = text.rstrip()
        self._held = text[len(body):]
        self._emit(body)

    def _emit(self, text: str) -> None:
        if text:
            self._pending.append(text)

    def finish(self, answer: str) -> None:
        """The rest of the final answer, if what was sent is its start (it always is, by construction)."""
        sent = self.sent + "".join(self._pending)
        if answer.startswith(sent):
            self._emit(answer[len(sent):])
        else:  # would be a bug in the formatting above: say so, and send nothing that contradicts the answer
            log.warning("streamed text is not the start of the final answer; the rest is not streamed")
        self.streams_answer = False  # nothing after the answer

    def take(self) -> str:
        text = "".join(self._pending)
        self._pending.clear()
        self.sent += text
        return text

    @staticmethod
    def finish_reason(trace: Any) -> str:
        """'length' when the answer is one call's text and that call hit its token cap, else 'stop'."""
        calls = getattr(trace, "calls", [])
        return "length" if len(calls) == 1 and calls[0].finish_reason == "length" else "stop"
