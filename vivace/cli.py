"""The ``vivace`` console script: parse arguments, build the config, call into the packages, print.

Errors caused by input or environment (``VivaceError``) print as one line and
exit non-zero; ``--debug`` adds the traceback. Command groups that live in
other packages plug in through a ``register(sub, parents)`` function.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import logging
import os
import signal
import sys
import warnings
from typing import Any, Sequence

from vivace import __version__
from vivace.config import Config, load_config
from vivace.errors import InputError, VivaceError

log = logging.getLogger("vivace")

# Packages that add subcommands: module -> which subparsers it registers on.
PLUGGED_COMMANDS = {
    "vivace.agents.commands": "top",
    "vivace.retrieval.commands": "top",
    "vivace.eval.context_bench": "bench",
    "vivace.eval.sot_bench": "bench",
    "vivace.eval.overhead_bench": "bench",
    "vivace.eval.quant_bench": "bench",
    "vivace.eval.load_bench": "bench",
    "vivace.eval.report": "top",
    "vivace.tui.commands": "top",
}

# CLI flag -> config key. Flags left unset (None) do not override lower layers.
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
}


def _common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("common options")
    g.add_argument("--config", metavar="FILE", help="TOML config file (default: ./vivace.toml if present)")
    g.add_argument("--debug", action="store_true", help="show tracebacks and engine logs")
    g.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    g.add_argument("--home", metavar="DIR", help="where models, stores and traces live ($VIVACE_HOME)")
    g.add_argument("--backend", help="vllm | openai | fake")
    g.add_argument("--base-url", action="append", metavar="URL", help="OpenAI-compatible server; repeat for a fleet")
    g.add_argument("--model", help="embedded model name, local HF folder, or hub id")
    g.add_argument("--max-tokens", type=int, metavar="N", help="output token cap per call")
    g.add_argument("--kv-cache-dtype", help="auto | fp8 | fp8_e4m3 | fp8_e5m2")
    g.add_argument("--quantization", help="e.g. int8_per_channel_weight_only (CPU), awq, gptq, fp8 (GPU)")
    g.add_argument("--dtype", help="auto | bfloat16 | float16 | float32")
    g.add_argument("--max-model-len", type=int, metavar="N", help="context length (default: the model's)")
    g.add_argument("--max-in-flight", type=int, metavar="N", help="process-wide cap on concurrent requests")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_parser()
    parser = argparse.ArgumentParser(
        prog="vivace",
        description="Efficiency-aware multi-agent orchestration over vLLM.",
    )
    parser.add_argument("--version", action="version", version=f"vivace {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ask = sub.add_parser("ask", parents=[common], help="answer one question, streaming, with timings")
    ask.add_argument("question", help="the question to answer")
    ask.add_argument("--mode", choices=("auto", "sot", "normal"), help="Skeleton-of-Thought, normal, or let the router decide")
    ask.add_argument("--temperature", type=float, help="sampling temperature (default 0: greedy)")
    ask.add_argument("--trace-out", metavar="FILE", help="also append the run's trace to this JSONL file")
    ask.add_argument("--collection", "--rag", dest="collection", metavar="NAME",
                     help="retrieve context from this collection before every call")
    ask.add_argument("--compression", help="off | auto | always: compress the retrieved context (auto: when it pays)")
    ask.add_argument("--live", action="store_true", help="live view: skeleton, one panel per point, live figures (on a terminal)")
    ask.add_argument("--compare", action="store_true", help="then run normal decoding on the same question and report the measured speedup")
    ask.set_defaults(handler=_handler("vivace.commands.ask", "cmd_ask"))

    models = sub.add_parser("models", help="prepare and list models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    prep = msub.add_parser("prepare", parents=[common], help="convert the embedded GGUF into a model folder")
    prep.add_argument("--force", action="store_true", help="convert again even if prepared")
    prep.set_defaults(handler=_handler("vivace.commands.models", "cmd_prepare"))
    lst = msub.add_parser("list", parents=[common], help="known models and where they are")
    lst.set_defaults(handler=_handler("vivace.commands.models", "cmd_list"))

    bench = sub.add_parser("bench", help="benchmarks that write report.json")
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    from vivace.eval import backend_bench

    backend_bench.register(bsub, [common])

    groups = {"top": sub, "bench": bsub}
    for module_name, where in PLUGGED_COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            log.debug("commands from %s unavailable: %s", module_name, exc)
            continue
        module.register(groups[where], [common])
    return parser


def _handler(module: str, name: str) -> Any:
    """Import a command lazily, so `vivace --help` does not pay for torch and vLLM."""

    def call(args: argparse.Namespace, config: Config) -> Any:
        return getattr(importlib.import_module(module), name)(args, config)

    return call


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {key: getattr(args, flag, None) for flag, key in CONFIG_FLAGS.items()}
    return load_config(getattr(args, "config", None), overrides)


def _setup_logging(debug: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    # Logs go to stderr: stdout carries the answer and the --json record.
    handler = RichHandler(console=Console(stderr=True), show_path=debug, rich_tracebacks=False, markup=False)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("vivace").setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        # vLLM configures its own logging at import; its warnings are noise for users.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
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


def _terminate_like_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM takes Ctrl-C's path, so the engine is shut down instead of orphaned."""
    os.kill(os.getpid(), signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate_like_interrupt)
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
            result = asyncio.run(result)
        return int(result or 0)
    except VivaceError as exc:
        if debug:
            log.exception("failed")
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def emit_json(record: dict[str, Any]) -> None:
    """The machine-readable result: one JSON object as the last line of stdout."""
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


def require_question(text: str) -> str:
    if not text or not text.strip():
        raise InputError("the question is empty")
    return text.strip()


if __name__ == "__main__":
    sys.exit(main())
