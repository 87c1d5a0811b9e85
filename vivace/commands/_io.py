"""What every command shares: parsers and flag groups, config from flags, JSON output, Ctrl-C, plain printing.

Why one module: the commands must agree on flag names, on the one-JSON-line
contract of ``--json`` and on how an interrupt stops the engine; a helper that
lives in ``vivace.cli`` would make commands import back into the entry point.
Importing this module stays cheap (no rich, torch, vLLM or LangGraph at import
time) because ``vivace --help`` imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeAlias, TypeVar

from vivace.choices import Approve, Compression, Mode, values
from vivace.config import Config, load_config
from vivace.errors import InputError, VivaceError

if TYPE_CHECKING:
    from rich.console import Console

    from vivace.trace import RunTrace

log = logging.getLogger(__name__)

T = TypeVar("T")
# What `register(sub, parents)` adds its parsers to (a string: argparse's class is generic only in typeshed).
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

MODES = values(Mode)
COMPRESSION = values(Compression)
APPROVE = values(Approve)

# CLI flag (argparse dest) -> config key. Flags a command lacks, or left unset (None), do not override lower layers.
CONFIG_FLAGS = {
    "model": "model",
    "backend": "backend",
    "base_url": "base_urls",
    "max_tokens": "max_tokens",
    "kv_cache_dtype": "kv_cache_dtype",
    "quantization": "quantization",
    "dtype": "dtype",
    "max_model_len": "max_model_len",
    "max_in_flight": "max_in_flight",
    "home": "home",
    "compression": "compression",
    "temperature": "temperature",  # ask and run: checked like the TOML key, not taken as is
    "scheduling": "scheduling",
    "execution": "execution",
    "long_form": "long_form",
}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser without prefix abbreviations: `--mod sot` must fail, not silently mean `--model sot`.

    ``add_subparsers`` builds subparsers of the parent's class, so setting this
    on the top parser covers every command and action below it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """One line, like every other CLI error (argparse's default repeats the whole usage block)."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """As argparse, but an unknown flag is blamed on the command it was given to, for the hint."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self._innermost(parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _innermost(self, ns: argparse.Namespace) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self
        while True:
            sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
            chosen = getattr(ns, sub.dest, None) if sub is not None and sub.dest != argparse.SUPPRESS else None
            if sub is None or chosen not in sub.choices:
                return parser
            parser = sub.choices[chosen]


@dataclass(frozen=True)
class Parents:
    """The shared flag groups, as argparse parent parsers; each command picks the ones it uses."""

    common: argparse.ArgumentParser  # --config --debug --home: every command
    json: argparse.ArgumentParser  # --json: every command with a result to print
    model: argparse.ArgumentParser  # --backend --base-url --model --max-tokens --max-in-flight: commands that call a model
    engine: argparse.ArgumentParser  # --kv-cache-dtype --quantization --dtype --max-model-len: commands that start an engine

    @classmethod
    def build(cls) -> Parents:
        common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        g = common.add_argument_group("common options")
        g.add_argument("--config", metavar="FILE", help="TOML config file (default: ./vivace.toml if present)")
        g.add_argument("--debug", action="store_true", help="show tracebacks and engine logs")
        g.add_argument("--home", metavar="DIR", help="where models, stores and traces live ($VIVACE_HOME)")

        out = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        out.add_argument_group("output").add_argument(
            "--json", action="store_true", help="print one JSON object as the last line of stdout")

        model = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        g = model.add_argument_group("model options")
        g.add_argument("--backend", help="vllm | openai | fake")
        g.add_argument("--base-url", action="append", metavar="URL", help="OpenAI-compatible server; repeat for a fleet")
        g.add_argument("--model", help="embedded model name, local HF folder, or hub id")
        g.add_argument("--max-tokens", type=int, metavar="N", help="output token cap per call")
        g.add_argument("--max-in-flight", type=int, metavar="N", help="process-wide cap on concurrent requests")
        g.add_argument("--scheduling", metavar="POLICY",
                       help="which waiting request goes first: fcfs | critical | fair | program (default) | age")

        engine = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        g = engine.add_argument_group("engine options (embedded vLLM)")
        g.add_argument("--kv-cache-dtype", help="auto | fp8 | fp8_e4m3 | fp8_e5m2")
        g.add_argument("--quantization", help="e.g. int8_per_channel_weight_only (CPU), awq, gptq, fp8 (GPU)")
        g.add_argument("--dtype", help="auto | bfloat16 | float16 | float32")
        g.add_argument("--max-model-len", type=int, metavar="N", help="context length (default: the model's)")
        return cls(common=common, json=out, model=model, engine=engine)

    def calls_model(self) -> list[argparse.ArgumentParser]:
        """Parents of a command that starts an engine (or talks to a server) and prints a result."""
        return [self.common, self.json, self.model, self.engine]


def add_collection(p: argparse.ArgumentParser, *, rag_alias: bool, help: str) -> None:
    """``--collection NAME`` on every command that retrieves; ``--rag`` is the older spelling (same dest)."""
    flags = ("--collection", "--rag") if rag_alias else ("--collection",)
    p.add_argument(*flags, dest="collection", metavar="NAME", help=help)


def add_compression(p: argparse.ArgumentParser, help: str = "compress the retrieved context: off, auto (when it pays), always") -> None:
    """``--compression`` wherever a model is called; it sets the config key ``compression``."""
    p.add_argument("--compression", choices=COMPRESSION, help=help)


def add_approve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--approve", choices=APPROVE,
                        help="steps and tools that require approval: ask on the terminal (default when there is "
                             "one), approve all, or none; without a terminal the run pauses there")


def approver(choice: str | None, prompt: bool = True) -> Any:
    """The run's ``approve``: "all", "none", a terminal prompt, or None (pause) when nobody can be asked."""
    if choice in (Approve.ALL, Approve.NONE):
        return choice
    if not prompt or (choice is None and not sys.stdin.isatty()):  # (the live view owns the terminal)
        return None

    async def ask(approval: Any) -> bool:
        from rich.prompt import Confirm

        return await asyncio.to_thread(Confirm.ask, f"[yellow]approve?[/] {approval.what}", default=False)

    return ask


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {key: getattr(args, flag, None) for flag, key in CONFIG_FLAGS.items()}
    return load_config(getattr(args, "config", None), overrides)


def emit_json(record: dict[str, Any]) -> None:
    """The machine-readable result: one JSON object as the last line of stdout."""
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


def require_question(text: str) -> str:
    """The question or task from argv, stripped and valid Unicode.

    Python decodes argv with ``surrogateescape``: bytes that are not UTF-8
    become lone surrogates, which every encoder later (tokenizer, terminal,
    JSON, runs.jsonl) refuses. They become U+FFFD here, once, so the rest of
    the run sees ordinary text.
    """
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate argv decoding cannot make (library callers): replace it too
        text = text.encode("utf-8", "replace").decode("utf-8")
    if not text or not text.strip():
        raise InputError("the question is empty")
    return text.strip()


def check_run_outputs(config: Config, trace_out: str | None) -> None:
    """Make sure the run's record can be written before the run, not after it.

    A run appends its record to ``$VIVACE_HOME/runs/runs.jsonl`` and to
    ``--trace-out``; finding out afterwards that one is a directory or not
    writable would lose the record of a run that already cost its time. An
    unusable home is the environment's fault (exit 1); a bad ``--trace-out``
    is bad input (exit 2). Both are opened for appending here, which is what
    the run does anyway.
    """
    home, runs = config.home, config.runs_dir / "runs.jsonl"
    if home.exists() and not home.is_dir():
        raise VivaceError(f"home {home} is not a directory (set --home or VIVACE_HOME to a writable directory)")
    try:
        runs.parent.mkdir(parents=True, exist_ok=True)
        runs.open("a", encoding="utf-8").close()
    except OSError as exc:
        raise VivaceError(f"cannot write the run records to {runs}: {exc.strerror or exc}") from None
    if trace_out is None:
        return
    out = Path(trace_out)
    if out.is_dir():
        raise InputError(f"--trace-out {out} is a directory; give a file to append the run's record to")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.open("a", encoding="utf-8").close()
    except OSError as exc:
        raise InputError(f"--trace-out {out}: cannot write it: {exc.strerror or exc}") from None


async def interruptible(work: Awaitable[T], backend: Any) -> T:
    """Run ``work`` so that Ctrl-C or SIGTERM stops it now.

    The signal cancels the run and aborts the backend's requests at the engine
    (a cancellation alone can leave a generation running to its natural end),
    then surfaces as KeyboardInterrupt, which the CLI reports as exit 130.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()
        abort = getattr(backend, "abort_all", None)
        if abort is not None:
            loop.create_task(abort())

    signals = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.getsignal(sig) for sig in signals}  # the CLI's SIGTERM handler, an ignored SIGINT
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        result = await task
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)  # which leaves the default, not what was there
            if before[sig] is not None:
                signal.signal(sig, before[sig])
    if interrupted:
        raise KeyboardInterrupt
    return result


class PlainPrinter:
    """Consumes controller events in a plain terminal (`vivace ask`, `vivace tui` into a pipe).

    Normal answers stream as they are generated. SoT streams its skeleton, then
    prints the finished answer in point order once every branch is done
    (branches finish out of order; interleaving them would be unreadable).
    Error events are not printed (they only end a half-written line): a failure
    that ends the run is the CLI's one error line, and a failed point is logged
    by the controller and marked in the answer; printing the event too showed
    every error twice.
    """

    def __init__(self, out: TextIO | None, err: Console) -> None:
        from vivace.agents import events  # here, not at import: `vivace --help` stays quick

        self.ev = events
        self.out = out
        self.err = err
        self.done = 0
        self.line_open = False  # the last text written did not end the line

    def _write(self, text: str) -> None:
        if self.out is not None and text:
            self.out.write(text)
            self.out.flush()
            self.line_open = not text.endswith("\n")

    def __call__(self, event: Any) -> None:
        from rich.markup import escape  # reasons may hold brackets, such as pip install 'vivace[rag]'

        ev = self.ev
        if isinstance(event, ev.Routed):
            self.err.print(f"[dim]route: {event.mode} ({escape(event.reason)})[/dim]", highlight=False)
        elif isinstance(event, ev.SkeletonDelta):
            self._write(event.text)
        elif isinstance(event, ev.SkeletonDone):
            self._write("\n")
            if event.fallback:
                self.err.print(f"[dim]skeleton unusable ({escape(event.fallback)}); answering normally[/dim]",
                               highlight=False)
            elif self.out is not None:
                self.err.print(f"[dim]expanding {len(event.points)} points in parallel...[/dim]", highlight=False)
        elif isinstance(event, ev.AnswerDelta):
            self._write(event.text)
        elif isinstance(event, ev.BranchDone):
            self.done += 1
        elif isinstance(event, ev.ErrorEvent) and self.line_open:
            self._write("\n")  # the error line that follows starts on a line of its own
        elif isinstance(event, ev.AnswerDone):
            if event.mode == "sot" and event.points:
                self._write("\n" + event.answer)
            self._write("\n")


def summary_line(run: RunTrace) -> str:
    """One line of figures read from a run's trace, printed after every answer."""
    out = run.output_tokens
    rate = out / run.latency_s if run.latency_s > 0 else 0.0
    ttft = f"{run.ttft_s:.2f} s" if run.ttft_s is not None else "-"
    return (
        f"{run.mode} · TTFT {ttft} · latency {run.latency_s:.2f} s · "
        f"{out} tokens out, {run.prompt_tokens} in · {rate:.1f} tok/s · {len(run.calls)} call(s) · "
        f"{run.backend}:{run.model}"
    )
