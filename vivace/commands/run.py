"""`vivace run AGENT "TASK"`: an agent or a pipeline, with per-agent timings.

Why here: the CLI only parses flags; this module resolves the agent (before
any engine starts, so an unknown name fails fast), streams events, prints the
result with a per-agent table, and saves the trace to runs.jsonl even when an
agent fails mid-run. Heavy imports happen inside the handler.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from typing import Any

from vivace.choices import ToolMode, values
from vivace.commands._io import (
    MODES,
    Parents,
    Subparsers,
    add_approve,
    add_collection,
    add_compression,
    approver,
    check_run_outputs,
    emit_json,
    interruptible,
    require_question,
)
from vivace.config import Config

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    run = sub.add_parser("run", parents=parents.calls_model(), help="run an agent or pipeline on a task, with per-agent timings")
    run.add_argument("agent", help="a registered agent (see `vivace agents list`) or a pipeline .toml file")
    run.add_argument("task", help="the task to run")
    run.add_argument("--mode", choices=MODES, help="answer mode of the sot agent: Skeleton-of-Thought, normal, or the router's choice")
    run.add_argument("--trace-out", metavar="FILE", help="also append the run's trace to this JSONL file")
    add_collection(run, rag_alias=False, help="retrieve context from this collection before every call")
    add_compression(run)
    run.add_argument("--max-branches", type=int, metavar="N", help="fan-out width (research: sub-questions)")
    run.add_argument("--max-rounds", type=int, metavar="K", help="bound on every loop (research: revision rounds)")
    run.add_argument("--execution", metavar="HOW",
                     help="pipelines: dataflow (default: a step starts when its inputs are ready) | supersteps")
    run.add_argument("--long-form", metavar="HOW",
                     help="SoT inside agents (the writer's answer): off (default) | auto (the router decides) | sot")
    run.add_argument("--history-budget", type=int, default=1024, metavar="TOKENS",
                     help="the history size compression aims at, when it pays (default 1024)")
    run.add_argument("--temperature", type=float, help="sampling temperature (default 0: greedy)")
    run.add_argument("--default-model", metavar="NAME",
                     help="the model ([models.NAME] in the config) for steps that name none (default: default)")
    run.add_argument("--tools", nargs="+", metavar="NAME",
                     help="the tools the run's steps may call when they name none (default: every tool the config "
                          "and plug-ins give; see `vivace tools list`)")
    run.add_argument("--tool-mode", choices=values(ToolMode),
                     help="the tools agent: plan every call at once (default auto) or a ReAct loop")
    run.add_argument("--live", action="store_true", help="live view: one row per agent, SoT points as panels (on a terminal)")
    run.add_argument("--thread", metavar="ID", help="a conversation: earlier turns of thread ID reach every call, "
                                                    "and this answer becomes its next turn")
    add_approve(run)
    run.set_defaults(handler=cmd_run)


class _Printer:
    """Events as progress lines on stderr; a single agent's text streams to stdout as it comes."""

    def __init__(self, stream_text: bool) -> None:
        from rich.console import Console

        self.err = Console(stderr=True, highlight=False)
        self.stream_text = stream_text
        self.streamed = ""
        self._request: str | None = None  # the one call whose text streams (concurrent calls would interleave)

    def __call__(self, event: Any) -> None:
        kind = event.kind
        label = getattr(event, "step", "") + (f" #{event.branch}" if getattr(event, "branch", None) else "")
        if kind == "agent_delta":
            if self.stream_text and event.branch is None and self._request in (None, event.request_id):
                self._request = event.request_id
                sys.stdout.write(event.text)
                sys.stdout.flush()
                self.streamed += event.text
        elif kind == "agent_started":
            if not self.stream_text:
                again = f", round {event.round + 1}" if event.round else ""
                self.err.print(f"[dim]▶ {label} ({event.agent}{again})[/]")
        elif kind == "agent_done":
            if not self.stream_text:
                self.err.print(f"[green]✓[/] {label} [dim]{event.seconds:.2f} s · {event.calls} call(s) · "
                               f"{event.output_tokens} tokens out[/]")
        elif kind == "tool_started":
            args = json.dumps(event.arguments, ensure_ascii=False, default=str)
            self.err.print(f"[dim]⚙ {label} → {event.name}({args[:120]})[/]")
        elif kind == "tool_done":
            how = f"[red]✗ {event.error}[/]" if event.error else "[green]✓[/]" + (" cached" if event.cache_hit else "")
            self.err.print(f"  {how} [dim]{event.name} {event.seconds:.2f} s[/]")
        elif kind == "agent_failed":
            if not self.stream_text:  # a single agent's failure is the CLI's error line; printing it here doubled it
                self.err.print(f"[red]✗ {label} ({event.agent}): {event.message}[/]")


async def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console

    from vivace.agents.driver import resolve, run, run_record
    from vivace.agents.options import RunOptions
    from vivace.agents.pipeline.spec import Pipeline
    from vivace.agents.pipeline.step_model import check_models, models_named
    from vivace.assembly import open_runtime
    from vivace.errors import InputError

    task = require_question(args.task)
    options = {k: v for k in ("max_branches", "max_rounds", "mode", "tool_mode")
               if (v := getattr(args, k, None)) is not None}
    if args.default_model:
        options["model"] = args.default_model
    try:  # RunOptions holds the bounds; its line names the flag the user typed
        RunOptions.parse(options)
    except InputError as exc:
        raise InputError(re.sub(r"^run option (\w+)", lambda m: "--" + m.group(1).replace("_", "-"), str(exc))) from None
    item = resolve(args.agent)  # unknown agent / bad pipeline: fail before starting an engine
    check_models(item, config.model_names, args.default_model)  # so does a model the config does not name
    check_run_outputs(config, args.trace_out)  # and before the run: its record must be writable
    from vivace.tui.live import live_wanted, print_final, run_live
    from vivace.tui.view import RunView, backend_probe

    live = live_wanted(args.live) and not args.json
    printer: Any = None if args.json or live else _Printer(
        stream_text=item.streams_answer and not isinstance(item, Pipeline))
    err = Console(stderr=True)
    with err.status(f"starting the {config.backend} backend ({config.model})..."):
        runtime = await open_runtime(config)
    try:
        if len(named := models_named(item, args.default_model)) > 1:  # start them now, not inside the run's clock
            with err.status(f"starting models {', '.join(named[1:])}..."):
                await runtime.models.open(named)
        view = RunView(task, backend_probe(runtime.backend), agent=item.name) if live else None
        if view is not None:
            view.expect_steps(item)
        work = run(item, task, runtime, on_event=view or printer, collection=args.collection, options=options,
                   compression=config.compression, history_budget_tokens=args.history_budget,
                   trace_out=args.trace_out, tools=args.tools, approve=approver(args.approve, prompt=not live),
                   thread=args.thread)
        trace = await interruptible(run_live(work, view) if view is not None else work, runtime.backend)
    finally:
        await runtime.aclose()  # the driver already saved the run's record, also on failure or Ctrl-C
    if args.json:
        emit_json(run_record(trace))
        return 0
    if view is not None:  # the live view (live)
        print_final(view)
        sys.stdout.write("\n")
    print_outcome(trace, printer, shown=live)
    return 0


def print_outcome(trace: Any, printer: Any, shown: bool = False) -> None:
    """The answer (unless it streamed whole or the live view showed it), the summary, and a pause's next step."""
    if trace.status == "paused":
        pending = trace.meta.get("pending_approval") or {}
        from rich.console import Console

        Console(stderr=True, highlight=False).print(
            f"[yellow]paused[/]: {pending.get('what', 'a step')} needs approval. The run is checkpointed; "
            f"finish it with `vivace resume {trace.run_id} --approve all` (or `--approve none`).")
        print_summary(trace)
        return
    if shown:
        pass
    elif printer is not None and printer.streamed:
        sys.stdout.write("\n")
        if printer.streamed.strip() != trace.answer.strip():  # other calls shaped the result: show it whole
            sys.stdout.write("\n" + trace.answer.strip() + "\n")
        sys.stdout.write("\n")
    else:
        sys.stdout.write(trace.answer.strip() + "\n\n")
    print_summary(trace)


def print_summary(trace: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from vivace.agents.driver import critical_path_text

    models = trace.models
    several = len(models) > 1  # then each agent's row names its models, and a table per model follows
    table = Table(title=f"{trace.agent} · {trace.backend}:{trace.model}")
    for col in ("agent", *(["models"] if several else ["runs"]), "latency s", "calls", "call s", "queue s",
                "tok in", "tok out"):
        table.add_column(col, justify="left" if col in ("agent", "models") else "right", no_wrap=col != "models",
                         min_width=7 if col == "models" else None)
    for a in trace.agents:
        table.add_row(a["name"], ", ".join(a.get("models", [])) if several else str(a["runs"]), f"{a['latency_s']:.2f}",
                      str(a["calls"]), f"{a['call_s']:.2f}", f"{a.get('queue_s', 0):.2f}", str(a["prompt_tokens"]),
                      str(a["output_tokens"]))
    console = Console(highlight=False)
    console.print(table)
    if several:
        console.print(model_table(models))
    if chain := critical_path_text(trace):  # the step names as the progress lines give them
        console.print(f"critical path: {chain}", style="dim")
    console.print(
        f"latency {trace.latency_s:.2f} s · critical path {trace.critical_path_s:.2f} s · "
        f"parallelism {trace.parallelism:.2f}x (sum of call times / wall) · {len(trace.calls)} call(s), "
        f"{trace.prompt_tokens} tokens in, {trace.output_tokens} out" + tools_text(trace),
        style="dim",
    )


def tools_text(trace: Any) -> str:
    """`` · 4 tool call(s), 2.01 s in tools, 1 cached, 1 failed`` when the run called tools."""
    tools = getattr(trace, "tools", [])
    if not tools:
        return ""
    hits, failed = sum(t.cache_hit for t in tools), sum(t.error is not None for t in tools)
    return (f" · {len(tools)} tool call(s), {sum(t.seconds for t in tools):.2f} s in tools"
            + (f", {hits} cached" if hits else "") + (f", {failed} failed" if failed else ""))


def model_table(models: list[dict[str, Any]]) -> Any:
    """Per model: what it is (two configurations of one weights folder show the same folder) and its load."""
    from pathlib import Path

    from rich.table import Table

    table = Table(title="models")
    for col in ("model", "what it is", "calls", "call s", "queue s", "tok in", "tok out"):
        text = col in ("model", "what it is")
        table.add_column(col, justify="left" if text else "right", no_wrap=col != "what it is")
    for m in models:
        weights = Path(m["weights"]).name if m.get("weights") else ", ".join(m.get("base_urls", []))
        kv = m.get("kv_cache_dtype")
        setup = [m.get("dtype"), m.get("quantization"), f"kv {kv}" if kv not in (None, "auto") else None]
        what = " · ".join(p for p in (m.get("served_by", ""), weights, *setup) if p)
        table.add_row(m["name"], what, str(m["calls"]), f"{m['call_s']:.2f}", f"{m['queue_s']:.2f}",
                      str(m["prompt_tokens"]), str(m["output_tokens"]))
    return table
