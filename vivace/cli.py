"""The ``vivace`` console script (and ``python -m vivace``): build the parser, parse, dispatch, map errors.

The commands live in ``vivace.commands``, one module each, registered here in
a fixed order; a module that fails to import is an error, not a missing
command. Commands from other packages come through the ``vivace.commands``
entry points, after the built-in ones: ``vivace bench`` and ``vivace report``
are ``vivace_bench``'s; a broken one is logged and skipped. Errors caused by input or environment (``VivaceError``) print as one
line and exit non-zero; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import signal
import sys
import warnings
from importlib import metadata
from typing import Any, Sequence

from vivace import __version__
from vivace.commands import agents, ask, collections, ingest, models, run, runs, serve, tools, tui
from vivace.commands._io import Parents, Parser, config_from_args
from vivace.errors import VivaceError, missing_extra
from vivace.plugins import load_group

log = logging.getLogger("vivace")

# vLLM's engine process imports this module first (multiprocessing's spawn re-runs the console
# script), then vLLM, whose import-time warnings ("Triton is installed, but doesn't include CPU
# backend") come before vLLM configures its logging and would print bare. The level the CLI chose
# for vLLM, inherited through the environment (``_setup_logging``), holds there from the start.
# (Not under ``python -m vivace``: spawn does not re-import a package's ``__main__``.)
if (_VLLM_LEVEL := os.environ.get("VLLM_LOGGING_LEVEL")) in ("ERROR", "CRITICAL"):
    logging.getLogger("vllm").setLevel(_VLLM_LEVEL)

# In `vivace --help` order; the plug-in commands follow.
COMMANDS = (ask, run, runs, serve, agents, tools, tui, ingest, collections, models)
COMMAND_GROUP = "vivace.commands"  # entry points: a function ``register(sub, parents)``, like a command module's


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vivace", description="Efficiency-aware multi-agent orchestration over vLLM.")
    parser.add_argument("--version", action="version", version=f"vivace {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parents = Parents.build()
    for command in COMMANDS:
        command.register(sub, parents)
    # Each plug-in registers inside the loader's guard: one that raises is logged and skipped.
    plugins = sorted(metadata.entry_points(group=COMMAND_GROUP), key=lambda ep: ep.name)
    load_group(COMMAND_GROUP, "command", lambda ep, _source: ep.load()(sub, parents), [], plugins)
    return parser


def _setup_logging(debug: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    # Logs go to stderr: stdout carries the answer and the --json record.
    handler = RichHandler(console=Console(stderr=True), show_path=debug, rich_tracebacks=False, markup=False)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("vivace").setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        # vLLM configures its own logging at import; its warnings are noise for users. So are torch's
        # C++ warnings in the engine process ("NUMA binding: Using MEMBIND policy ...").
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
        # The last one: vLLM leaves a shared-memory ring for the resource tracker to unlink at exit.
        os.environ.setdefault(
            "PYTHONWARNINGS",
            "ignore::FutureWarning,ignore::DeprecationWarning,ignore::UserWarning:multiprocessing.resource_tracker",
        )
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        logging.getLogger("vllm").setLevel(logging.ERROR)
        for noisy in ("httpx", "chromadb", "sentence_transformers", "transformers"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class _Terminated(Exception):
    """SIGTERM cancelled the command's coroutine (see ``_terminate_like_interrupt``)."""


_main_task: "asyncio.Task[Any] | None" = None
_terminated = False


def _terminate_like_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM takes Ctrl-C's path, so the engine is shut down instead of orphaned.

    A command a script starts in the background (``vivace ... &``) inherits
    SIGINT ignored, and forwarding SIGTERM there would do nothing. It then
    cancels the command's coroutine instead, as asyncio's own Ctrl-C handler
    does, so every ``finally`` runs (the engine shuts down, reports are kept).
    """
    global _terminated
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        _terminated = True
        if _main_task is None:
            raise KeyboardInterrupt
        _main_task.get_loop().call_soon_threadsafe(_main_task.cancel)
        return
    os.kill(os.getpid(), signal.SIGINT)


async def _as_main(work: Any) -> Any:
    """The command's coroutine, reachable by ``_terminate_like_interrupt``."""
    global _main_task
    _main_task = asyncio.current_task()
    try:
        return await work
    except asyncio.CancelledError:
        if _terminated:
            raise _Terminated from None
        raise
    finally:
        _main_task = None


def _tolerant_output() -> None:
    """Text the terminal cannot encode (a non-UTF-8 locale, a stray surrogate) is escaped.

    Otherwise printing the answer or the summary could crash after the run.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate_like_interrupt)
    _tolerant_output()
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    _setup_logging(debug)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        config = config_from_args(args)
        result = args.handler(args, config)
        if inspect.isawaitable(result):
            result = asyncio.run(_as_main(result))
        return int(result or 0)
    except VivaceError as exc:
        if debug:
            log.exception("failed")
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, _Terminated):
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, or an optional package missing: still one line unless --debug
        if debug:
            raise
        if hint := missing_extra(exc):
            print(f"error: {hint}", file=sys.stderr)
            return 1
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
