"""What a run looks like on screen, built only from the controller's events.

``RunView`` consumes the same events as the plain printer and renders to rich
renderables, so ``--live``, the full-screen ``vivace tui`` and the tests
(rich's capture console over recorded event streams) all show one thing.
Figures come from events and traces; the live in-flight and KV figures are
read from the backend through ``probe`` when it exposes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from vivace.trace import estimate_normal_s

Probe = Callable[[], tuple[int | None, float | None]]  # (requests in flight, KV-cache usage 0..1)


def backend_probe(backend: Any) -> Probe:
    """In-flight requests from the process limiter and KV use from the engine's stats, where present."""

    def probe() -> tuple[int | None, float | None]:
        limiter = getattr(backend, "limiter", None)
        stats = getattr(backend, "stats", None)
        return (getattr(limiter, "in_flight", None), getattr(stats, "kv_cache_usage", None))

    return probe


@dataclass
class Branch:
    point: str
    text: str = ""
    done: bool = False
    error: str | None = None
    tokens: int | None = None


@dataclass
class AgentRow:
    agent: str
    status: str = "running"
    tokens: int | None = None
    seconds: float | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass
class Outcome:
    """How the finished run compares with normal decoding: measured with --compare, else estimated."""

    latency_s: float
    baseline_s: float | None = None
    estimated: bool = True
    how: str = ""

    @property
    def speedup(self) -> float | None:
        return self.baseline_s / self.latency_s if self.baseline_s and self.latency_s > 0 else None


class RunView:
    """The state of one run, updated event by event; a rich renderable."""

    def __init__(self, question: str = "", probe: Probe | None = None, agent: str = "answer") -> None:
        self.question = question
        self.agent = agent
        self.probe = probe
        self.requested_mode = ""
        self.mode = ""
        self.reason = ""
        self.skeleton = ""
        self.points: list[str] = []
        self.fallback: str | None = None
        self.branches: dict[int, Branch] = {}
        self.answer = ""
        self.answer_from: str | None = None  # the pipeline step whose text ``answer`` holds
        self.final: str | None = None
        self.agents: dict[tuple[str, int | None], AgentRow] = {}
        self._tool_rows: dict[str, tuple[str, int]] = {}  # a tool call's id -> its row
        self._steps: dict[str, int] = {}  # step name -> its place in the pipeline (rows are shown in this order)
        self._sot_steps: set[str] = set()  # steps run by the SoT controller: their text comes in its own events
        self.errors: list[str] = []
        self.started = time.monotonic()
        self._seen = False
        self.first_token: float | None = None
        self.deltas = 0
        self.finished: float | None = None
        self.outcome: Outcome | None = None
        self.status = "running"
        self._trace: Any = None
        self.max_height: int | None = None  # the space a widget gives the view, when it is not the terminal's

    # events -------------------------------------------------------------
    def __call__(self, event: Any) -> None:
        if not self._seen:  # the clock starts with the run, not with graph compilation before it
            self._seen, self.started = True, time.monotonic()
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event)

    def _token(self) -> None:
        self.deltas += 1
        if self.first_token is None:
            self.first_token = time.monotonic()

    def _on_run_started(self, e: Any) -> None:
        self.question = e.question

    def _on_routed(self, e: Any) -> None:
        self.mode, self.reason, self.requested_mode = e.mode, e.reason, e.requested_mode

    def _on_skeleton_delta(self, e: Any) -> None:
        self.skeleton += e.text
        self._token()

    def _on_skeleton_done(self, e: Any) -> None:
        self.skeleton, self.points, self.fallback = e.text, list(e.points), e.fallback
        if e.fallback:
            self.branches = {}  # pipelined SoT's early points were cancelled with the skeleton
            self.mode = "normal"
            self.reason = f"{self.reason}; skeleton unusable ({e.fallback})" if self.reason else e.fallback
        else:
            # Pipelined SoT starts points before the skeleton is done: keep what they streamed.
            for i, p in enumerate(e.points, 1):
                self.branches.setdefault(i, Branch(p)).point = p

    def _on_branch_delta(self, e: Any) -> None:
        self.branches.setdefault(e.index, Branch(f"point {e.index}")).text += e.text
        self._token()

    def _on_branch_done(self, e: Any) -> None:
        branch = self.branches.setdefault(e.index, Branch(e.point))
        branch.text = e.text or branch.text
        branch.done, branch.error = True, e.error
        branch.tokens = e.call.output_tokens if e.call is not None else None

    def _on_answer_delta(self, e: Any) -> None:
        self.answer += e.text
        self._token()

    def _on_answer_done(self, e: Any) -> None:
        self.final = e.answer

    def _on_error(self, e: Any) -> None:
        where = e.node + ("" if e.branch is None else f" {e.branch}")
        self.errors.append(f"{where}: {e.message}")

    def expect_steps(self, target: Any) -> None:
        """A row per pipeline step before anything runs, so steps not yet started show as waiting."""
        from vivace.agents.pipeline.spec import single

        for step in single(target).step_list:
            self._steps.setdefault(step.name, len(self._steps))
            self.agents.setdefault((step.name, None), AgentRow(step.agent, status="waiting"))

    def _on_agent_started(self, e: Any) -> None:
        if e.agent == "sot":
            self._sot_steps.add(e.step)
            if not self._steps:  # the controller run on its own: its panels are the view, not a row
                return
        waiting = self.agents.get((e.step, None))
        if e.branch is not None and waiting is not None and waiting.status == "waiting":
            del self.agents[(e.step, None)]  # a fan-out step: its branches take the placeholder's place
        self._steps.setdefault(e.step, len(self._steps))
        self.agents[(e.step, e.branch)] = AgentRow(e.agent)

    def _on_agent_delta(self, e: Any) -> None:
        if e.step in self._sot_steps:  # mirrored from the controller's own deltas, already shown
            return
        self._token()
        if e.branch is None and not self.branches:
            if e.step != self.answer_from:  # a pipeline: show the step streaming now, not all steps run together
                self.answer, self.answer_from = "", e.step
            self.answer += e.text

    def _on_agent_done(self, e: Any) -> None:
        if e.step in self._sot_steps and (e.step, e.branch) not in self.agents:
            return
        row = self.agents.setdefault((e.step, e.branch), AgentRow(e.agent))
        row.status, row.tokens, row.seconds = "done", e.output_tokens, e.seconds

    def _on_agent_failed(self, e: Any) -> None:
        if e.step in self._sot_steps and (e.step, e.branch) not in self.agents:
            self.errors.append(f"{e.step}: {e.message}")
            return
        row = self.agents.setdefault((e.step, e.branch), AgentRow(e.agent))
        row.status, row.seconds = "failed", time.monotonic() - row.started
        self.errors.append(f"{e.step} ({e.agent}): {e.message}")

    def _on_tool_started(self, e: Any) -> None:
        """A tool call is a row under its step while it runs: tools are on the critical path too."""
        label = f"{e.step or 'run'} → {e.name}"
        self._steps.setdefault(label, self._steps.get(e.step, len(self._steps)))
        self._tool_rows[e.call_id] = (label, len(self._tool_rows) + 1)
        self.agents[self._tool_rows[e.call_id]] = AgentRow("tool")

    def _on_tool_done(self, e: Any) -> None:
        key = self._tool_rows.get(e.call_id)
        if key is None:
            return
        row = self.agents[key]
        row.status = "failed" if e.error else "cached" if e.cache_hit else "done"
        row.seconds = e.seconds
        if e.error:
            self.errors.append(f"tool {e.name}: {e.error}")

    def finish(self, trace: Any | None, status: str = "done", baseline_s: float | None = None) -> None:
        """The run ended: keep its final answer and figures, and how it compares with normal decoding."""
        self.finished = time.monotonic()
        self.status = status
        for row in self.agents.values():
            if row.status == "running":  # stopped with the run: freeze its clock
                row.status = "failed" if status == "failed" else "cancelled"
                row.seconds = self.finished - row.started
        if trace is None:
            return
        self.final = self.final or getattr(trace, "answer", None)
        if baseline_s is not None:
            self.outcome = Outcome(trace.latency_s, baseline_s, estimated=False, how="measured normal run, same engine and budget")
        elif self.mode == "sot" and self.points and not self.fallback:
            estimate, how = estimate_normal_s(trace)
            self.outcome = Outcome(trace.latency_s, estimate, estimated=True, how=how)
        elif (parallelism := getattr(trace, "parallelism", None)) is not None and self.agents:
            self.outcome = Outcome(trace.latency_s, None, how=f"parallelism {parallelism:.2f}× (sum of call times / wall time)")
        else:
            self.outcome = Outcome(trace.latency_s, None, how="normal decoding: nothing to compare")
        self._trace = trace

    # rendering ----------------------------------------------------------
    def header(self) -> Text:
        text = Text()
        text.append("Q: ", style="bold")
        text.append(self.question or "…")
        text.append("\n")
        if self.mode:
            text.append(f"route: {self.mode}", style="bold cyan")
            text.append(f" · {self.reason}", style="dim")
        elif self.agents:
            steps = list(self._steps)  # pipeline order
            text.append(f"pipeline: {len(steps)} step(s)", style="bold cyan")
            text.append(f" · {', '.join(steps)}", style="dim")
        else:
            text.append("routing…", style="dim")
        return text

    def footer(self, detail: bool = True) -> Text:
        """Live figures, then the trace's once the run ends (``detail``: how the speedup was got, on its own line).

        While running, TTFT is the first streamed delta and tok/s counts
        streamed deltas since then (an engine step yields about one token per
        request), hence the ``~``; the finished footer reads the trace only.
        """
        end = self.finished or time.monotonic()
        elapsed = end - self.started
        parts = [f"elapsed {elapsed:.1f} s"]
        trace = getattr(self, "_trace", None)
        ttft = trace.ttft_s if trace is not None and trace.ttft_s is not None else (
            self.first_token - self.started if self.first_token else None)
        parts.append(f"TTFT {ttft:.2f} s" if ttft is not None else "TTFT -")
        if trace is not None and trace.latency_s > 0:
            parts.append(f"{trace.output_tokens / trace.latency_s:.1f} tok/s")
        elif self.first_token:
            parts.append(f"~{self.deltas / max(1e-6, end - self.first_token):.1f} tok/s")
        in_flight, kv = self.probe() if self.probe and self.finished is None else (None, None)
        if in_flight is not None:
            parts.append(f"in flight {in_flight}")
        if kv is not None:
            parts.append(f"KV {kv:.1%}")
        text = Text(" · ".join(parts), style="bold" if self.finished else "")
        if self.outcome is not None:
            o = self.outcome
            text.append(f"\n{self.status}: latency {o.latency_s:.2f} s", style="bold green" if self.status == "done" else "bold red")
            if o.speedup is not None:
                label = "estimated speedup" if o.estimated else "speedup"
                text.append(f" · {label} {o.speedup:.2f}× vs normal ({o.baseline_s:.2f} s{' est.' if o.estimated else ''})", style="bold")
            if o.how and detail:
                text.append(f"\n{o.how}", style="dim")
            from vivace.agents.driver import critical_path_text  # the driver (LangGraph) is loaded by then

            if detail and trace is not None and (chain := critical_path_text(trace)):
                text.append(f"\ncritical path: {chain}", style="dim")  # what the latency waited on, step by step
        elif self.finished is not None:
            text.append(f"\n{self.status}", style="bold red")
        return text

    @staticmethod
    def _lines(text: Text, width: int) -> int:
        """Screen lines ``text`` takes at ``width`` (word-wrapped, as rich does)."""
        import textwrap

        return sum(len(textwrap.wrap(line, max(1, width)) or [""]) for line in text.plain.split("\n"))

    def _tail(self, text: str, width: int, lines: int) -> Text:
        """The last ``lines`` screen lines of ``text`` at ``width``: the newest text stays in view."""
        import textwrap

        wrapped: list[str] = []
        for para in text.strip().split("\n"):
            wrapped.extend(textwrap.wrap(para, width, break_long_words=True) or [""])
        return Text("\n".join(wrapped[-lines:]))

    def _columns(self, width: int) -> tuple[int, int]:
        cols = 1 if width < 60 else 2 if width < 130 else 3
        return cols, (len(self.branches) + cols - 1) // cols

    def _points(self, width: int, space: int) -> Table:
        """Point panels in a grid, each as tall as ``space`` lines allow for all rows (at least one text line)."""
        cols, rows = self._columns(width)
        lines = max(1, space // max(1, rows) - 2)
        inner = max(10, width // cols - 4)
        grid = Table.grid(expand=True, padding=(0, 0))
        for _ in range(cols):
            grid.add_column(ratio=1)
        cells = []
        for i, b in sorted(self.branches.items()):
            state = "✗" if b.error else "✓" if b.done else "…"
            style = "red" if b.error else "green" if b.done else "yellow"
            body = self._tail(b.error or b.text, inner, lines)
            cells.append(Panel(body, title=f"{state} {i}. {b.point}"[: inner], title_align="left", border_style=style, height=lines + 2))
        for r in range(rows):
            row = cells[r * cols : (r + 1) * cols]
            grid.add_row(*row, *([""] * (cols - len(row))))
        return grid

    def _agents(self) -> Table:
        table = Table(expand=True, title=None, show_edge=False, pad_edge=False)
        for col in ("step", "agent", "status", "tokens", "latency s"):
            table.add_column(col, justify="right" if col in ("tokens", "latency s") else "left")
        colors = {"done": "green", "cached": "green", "failed": "red", "cancelled": "red", "running": "yellow",
                  "waiting": "dim"}
        now = time.monotonic()
        rows = sorted(self.agents.items(), key=lambda kv: (self._steps.get(kv[0][0], 0), kv[0][1] or 0))  # pipeline order
        for (step, branch), row in rows:
            seconds = row.seconds if row.seconds is not None else None if row.status == "waiting" else now - row.started
            table.add_row(step + (f" #{branch}" if branch else ""), row.agent, f"[{colors.get(row.status, '')}]{row.status}[/]",
                          "-" if row.tokens is None else str(row.tokens), "-" if seconds is None else f"{seconds:.1f}")
        return table

    def renderables(self, width: int, height: int) -> list[Any]:
        """Header, body and footer, the body sized so that all of it fits in ``height`` lines."""
        header = self.header()
        out: list[Any] = [Panel(header, title=f"vivace · {self.agent}", title_align="left", border_style="cyan")]
        errors = [Text(err, style="red") for err in self.errors[-2:]]
        footer = self.footer()
        table = self._agents() if self.agents and (len(self.agents) > 1 or not self.branches) else None
        fixed = (self._lines(header, width - 4) + 2 + sum(self._lines(e, width) for e in errors)
                 + (len(self.agents) + 2 if table is not None else 0))  # header panel, errors, agent table
        space = height - fixed - self._lines(footer, width - 4) - 2
        if self.branches and space < 3 * self._columns(width)[1]:
            footer = self.footer(detail=False)  # the points first; the transcript keeps how it was measured
            space = height - fixed - self._lines(footer, width - 4) - 2
        if table is not None:
            out.append(table)
        if self.branches:
            out.append(self._points(width, space))
        elif self.mode == "sot" and not self.points and self.skeleton:
            out.append(Panel(self._tail(self.skeleton, width - 4, max(1, space - 2)), title="skeleton", title_align="left"))
        elif self.answer or self.final:
            done = bool(self.finished and self.final)
            body = self.final if done else self.answer
            title = "answer" if done or not self.answer_from else self.answer_from
            out.append(Panel(self._tail(body or "", width - 4, max(1, space - 2)), title=title, title_align="left"))
        out.extend(errors)
        out.append(Panel(footer, border_style="green" if self.finished else "blue"))
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = self.max_height or options.height or console.size.height
        yield Group(*self.renderables(options.max_width, height))
