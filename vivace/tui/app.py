"""`vivace tui`: ask, watch the points grow side by side, keep a history, all in one screen.

A Textual app around ``RunView``. The engine starts once, before the app
opens (vLLM spawns its engine process, which cannot inherit the file
descriptors Textual puts in place of stdout), and serves every run. Ctrl-C cancels the running task (every
branch: the engine's requests are aborted) and keeps the app open; ``q``
(outside the prompt) or Ctrl-Q quits. Every finished, failed or cancelled run
is appended to ``$VIVACE_HOME/tui/transcript.jsonl``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from vivace.choices import Compression, Mode, values
from vivace.config import Config
from vivace.trace import append_jsonl
from vivace.tui.view import RunView, backend_probe

log = logging.getLogger(__name__)

MODES = values(Mode)
COMPRESSION = values(Compression)


@dataclass
class HistoryItem:
    question: str
    answer: str
    status: str
    latency_s: float | None
    mode: str


class ApprovalScreen(ModalScreen[bool]):
    """A step or tool call that waits for a yes: y approves, n or Esc refuses (the run goes on either way)."""

    BINDINGS = [Binding("y", "answer(True)", "approve"), Binding("n,escape", "answer(False)", "refuse")]

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def compose(self) -> ComposeResult:
        yield Static(f"[b yellow]approve?[/]\n\n{self.what}\n\n[b]y[/b] approve · [b]n[/b] refuse", id="approval")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class AnswerScreen(ModalScreen[None]):
    """The whole answer of one run, scrollable; c copies it, Esc closes."""

    BINDINGS = [Binding("escape,q", "dismiss", "close"), Binding("c", "copy", "copy")]

    def __init__(self, item: HistoryItem) -> None:
        super().__init__()
        self.item = item

    def compose(self) -> ComposeResult:
        head = f"[b]{self.item.question}[/b]\n[dim]{self.item.mode} · {self.item.status}" + (
            f" · {self.item.latency_s:.2f} s" if self.item.latency_s is not None else "") + " · c copy · Esc close[/dim]\n"
        with VerticalScroll():
            yield Static(head)
            yield Static(self.item.answer or "(no answer)", markup=False)

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.item.answer)
        self.app.notify("answer copied to the clipboard")


class VivaceTUI(App[None]):
    CSS = """
    #view { height: 1fr; }
    #status { height: 1; color: $text-muted; }
    #prompt { dock: bottom; }
    """
    BINDINGS = [
        Binding("ctrl+c", "cancel", "cancel run", priority=True),
        Binding("ctrl+q", "quit", "quit", priority=True),
        Binding("q", "quit", "quit"),
        Binding("f2", "cycle_mode", "mode"),
        Binding("f3", "cycle_agent", "agent"),
        Binding("f4", "cycle_rag", "RAG"),
        Binding("f5", "cycle_compression", "compression"),
        Binding("f6", "toggle_compare", "compare"),
        Binding("a", "show_answer", "answer"),
        Binding("h", "history", "history"),
        Binding("escape", "blur", "leave prompt", show=False),
        Binding("f12", "save_svg", "screenshot", show=False),
    ]

    def __init__(self, runtime: Any, agent: str = "answer", mode: str | None = None,
                 rag: str | None = None, compare: bool = False, thread: str | None = None) -> None:
        super().__init__()
        self.thread = thread  # a conversation: each answer is its next turn, and earlier turns reach the model
        config: Config = runtime.config
        self.runtime = runtime
        self.config = config
        self.mode = mode or config.mode
        self.agent = agent
        self.rag = rag
        self.compression = config.compression if config.compression in COMPRESSION else "auto"
        self.compare = compare
        self.backend: Any = runtime.backend
        self.view: RunView | None = None
        self.running: asyncio.Task[Any] | None = None
        self.history: list[HistoryItem] = []
        self.history_index = -1
        self.agents: list[str] = ["answer"]
        self.collections: list[str | None] = [None]
        self.transcript = config.home / "tui" / "transcript.jsonl"

    def compose(self) -> ComposeResult:
        yield Static("", id="view")
        yield Static("", id="status")
        yield Input(placeholder="question, Enter · F2 mode F3 agent F4 RAG F5 compress F6 compare · Esc q quits",
                    id="prompt", disabled=True)

    async def on_mount(self) -> None:
        self.set_interval(1 / 8, self._refresh)
        self._show_status()
        self.run_worker(self._start(), exclusive=True, group="engine")

    async def _start(self) -> None:
        from vivace.agents.registry import list_agents

        try:
            self.agents = sorted({"answer", *(r.agent.name for r in list_agents())}, key=lambda n: (n != "answer", n))
        except Exception as exc:  # agents are optional here; the answer agent always works
            log.debug("agent list unavailable: %s", exc)
        self.collections = [None, *self._collections()]
        if self.rag and self.rag not in self.collections:
            self.collections.append(self.rag)
        self.query_one("#view", Static).update(
            f"[green]ready[/green] · {self.backend.name}:{self.backend.model} (engine up in {getattr(self.backend, 'load_s', 0) or 0:.1f} s)\n"
            "Type a question and press Enter.")
        prompt = self.query_one("#prompt", Input)
        prompt.disabled = False
        prompt.focus()

    def _collections(self) -> list[str]:
        try:
            from vivace.retrieval.store import Store

            return Store(self.config).names()
        except Exception as exc:
            log.debug("collections unavailable: %s", exc)
            return []

    def _show_status(self, running: bool | None = None) -> None:
        if running is None:
            running = self.running is not None and not self.running.done()
        self.query_one("#status", Static).update(
            f"[b]{self.agent}[/b] · mode [b]{self.mode}[/b] · RAG [b]{self.rag or 'off'}[/b] · "
            f"compress [b]{self.compression}[/b] · compare [b]{'on' if self.compare else 'off'}[/b] · "
            f"{len(self.history)} run(s)" + (" · [yellow]Ctrl-C cancels[/yellow]" if running else " · a answer h history"))

    def _refresh(self) -> None:
        if self.view is not None:
            widget = self.query_one("#view", Static)
            self.view.max_height = widget.size.height or None
            widget.update(self.view)

    # input ------------------------------------------------------------------
    async def on_input_submitted(self, event: Input.Submitted) -> None:
        question = event.value.strip()
        if not question or self.backend is None:
            return
        if self.running is not None and not self.running.done():
            self.notify("a run is going on: Ctrl-C cancels it", severity="warning")
            return
        event.input.value = ""
        self.view = RunView(question, backend_probe(self.backend), agent=self.agent)
        self.running = asyncio.get_running_loop().create_task(self._run(question, self.view))
        self._show_status()

    async def _run(self, question: str, view: RunView) -> None:
        from vivace.tui.session import run_task

        trace, status, baseline = None, "done", None
        finished: list[Any] = []  # the driver hands over the trace even when the run is cancelled
        try:
            if self.agent != "answer":
                from vivace.agents.driver import resolve

                view.expect_steps(resolve(self.agent))
            trace = await run_task(self.runtime, question, agent=self.agent, mode=self.mode,
                                   rag=self.rag, compression=self.compression, on_event=view, on_finish=finished.append,
                                   thread=self.thread, approve=self.approve)
            if self.compare and trace.mode == "sot" and self.agent == "answer":
                view.status = "measuring normal decoding (compare)…"
                baseline = await run_task(self.runtime, question, agent="answer", mode="normal",
                                          rag=self.rag, compression=self.compression, on_event=None)
        except asyncio.CancelledError:
            status = "cancelled"
            trace = finished[0] if finished else None
        except Exception as exc:
            status = "failed"
            view.errors.append(str(exc) or type(exc).__name__)
            trace = getattr(exc, "trace", None)
        view.finish(trace, status=status, baseline_s=baseline.latency_s if baseline else None)
        self._refresh()
        item = HistoryItem(question, (trace.answer if trace else "") or view.final or "", status,
                           trace.latency_s if trace else None, view.mode or self.mode)
        self.history.append(item)
        self.history_index = len(self.history) - 1
        self._save(item, trace, view, baseline)
        self._show_status(running=False)  # called from inside the task, which is not done yet

    async def approve(self, approval: Any) -> bool:
        """A step or tool that requires approval: the prompt shows what it is, the run waits for y or n."""
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.push_screen(ApprovalScreen(approval.what), callback=lambda yes: answer.set_result(bool(yes)))
        return await answer

    def _save(self, item: HistoryItem, trace: Any, view: RunView, baseline: Any) -> None:
        """The run's record (the same keys as ``ask --json`` and ``run --json``) plus what the UI adds."""
        from vivace.agents.driver import run_record

        base = run_record(trace) if trace is not None else {"question": item.question, "answer": item.answer,
                                                            "mode": item.mode, "latency_s": item.latency_s}
        record = {**base, "t": time.time(), "tui_agent": self.agent, "requested_mode": self.mode,
                  "rag": self.rag, "compression": self.compression, "status": item.status,
                  "speedup": view.outcome.speedup if view.outcome else None,
                  "speedup_estimated": view.outcome.estimated if view.outcome else None,
                  "speedup_how": view.outcome.how if view.outcome else None,
                  "normal_latency_s": baseline.latency_s if baseline else None}
        try:
            append_jsonl(self.transcript, json.loads(json.dumps(record, default=str)))
        except OSError as exc:
            self.notify(f"transcript not written: {exc}", severity="error")

    # actions ----------------------------------------------------------------
    async def action_cancel(self) -> None:
        if self.running is None or self.running.done():
            self.notify("nothing is running (Ctrl-Q quits)")
            return
        self.running.cancel()
        abort = getattr(self.backend, "abort_all", None)
        if abort is not None:
            await abort()

    async def action_quit(self) -> None:
        if self.running is not None and not self.running.done():
            await self.action_cancel()
        self.exit()  # the command that started the engine shuts it down

    def action_save_svg(self) -> None:
        """An SVG of the screen as it is now, under ``$VIVACE_HOME/tui`` (docs/tui-done.png came from one)."""
        folder = self.config.home / "tui"
        folder.mkdir(parents=True, exist_ok=True)
        path = self.save_screenshot(filename=f"screen-{time.strftime('%Y%m%d-%H%M%S')}.svg", path=str(folder))
        self.notify(f"saved {path}")

    def action_blur(self) -> None:
        self.set_focus(None)

    def _cycle(self, values: list[Any] | tuple[Any, ...], current: Any) -> Any:
        return values[(list(values).index(current) + 1) % len(values)] if current in values else values[0]

    def action_cycle_mode(self) -> None:
        self.mode = self._cycle(MODES, self.mode)
        self._show_status()

    def action_cycle_agent(self) -> None:
        self.agent = self._cycle(self.agents, self.agent)
        self._show_status()

    def action_cycle_rag(self) -> None:
        self.rag = self._cycle(self.collections, self.rag)
        self._show_status()

    def action_cycle_compression(self) -> None:
        self.compression = self._cycle(COMPRESSION, self.compression)
        self._show_status()

    def action_toggle_compare(self) -> None:
        self.compare = not self.compare
        self._show_status()

    def action_show_answer(self) -> None:
        if self.history:
            self.push_screen(AnswerScreen(self.history[self.history_index]))

    def action_history(self) -> None:
        """Step back through earlier runs; the view shows the chosen run's question and answer."""
        if not self.history:
            self.notify("no runs yet")
            return
        self.history_index = (self.history_index - 1) % len(self.history)
        item = self.history[self.history_index]
        self.notify(f"run {self.history_index + 1}/{len(self.history)}: {item.question[:60]} ({item.status}) · a shows the answer")
