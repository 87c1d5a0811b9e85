"""Which command takes which flag: the parser alone (no handler runs, nothing starts)."""

from __future__ import annotations

import pytest

from vivace.cli import build_parser
from vivace.commands._io import config_from_args


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", [["ask", "q"], ["tui"]])
@pytest.mark.parametrize("flag", ["--rag", "--collection"])
def test_rag_is_collection(command: list[str], flag: str) -> None:
    assert parse(*command, flag, "handbook").collection == "handbook"


def test_run_retrieves_with_collection_only() -> None:
    assert parse("run", "answer", "t", "--collection", "handbook").collection == "handbook"
    with pytest.raises(SystemExit) as exc:
        parse("run", "answer", "t", "--rag", "handbook")
    assert exc.value.code == 2


@pytest.mark.parametrize("command", [["ask", "q"], ["run", "answer", "t"], ["tui"]])
def test_compression_is_a_choice_that_reaches_the_config(command: list[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    args = parse(*command, "--compression", "always", "--home", str(tmp_path))
    assert config_from_args(args).compression == "always"
    with pytest.raises(SystemExit):
        parse(*command, "--compression", "sometimes")


ENGINE = ["--kv-cache-dtype", "fp8", "--quantization", "fp8", "--dtype", "float32", "--max-model-len", "512"]
MODEL = ["--backend", "fake", "--base-url", "http://x", "--model", "m", "--max-tokens", "8", "--max-in-flight", "2"]


@pytest.mark.parametrize(
    "command",
    [["ask", "q"], ["run", "answer", "t"], ["tui"], ["bench", "backend"], ["bench", "sot"], ["bench", "context"], ["bench", "load"]],
)
def test_commands_that_start_an_engine_take_model_and_engine_flags(command: list[str]) -> None:
    args = parse(*command, *MODEL, *ENGINE)
    assert (args.backend, args.max_tokens, args.dtype, args.max_model_len) == ("fake", 8, "float32", 512)


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "list", "--model", "m"],
        ["models", "prepare", "--backend", "fake"],
        ["agents", "list", "--max-tokens", "8"],
        ["ingest", "docs", "-c", "abc", "--backend", "fake"],
        ["collections", "list", "--dtype", "float32"],
        ["report", "--model", "m"],
        ["bench", "overhead", "--backend", "fake"],  # its own zero-latency fake
        ["bench", "quant", "--dtype", "float32"],  # every quant config sets its own
        ["tui", "--json"],
    ],
)
def test_flags_only_where_they_apply(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "argv",
    [["ask", "q", "--mod", "sot"], ["run", "sot", "x", "--mod", "sot"], ["bench", "load", "--task", "2"],
     ["ingest", "docs", "--coll", "abc"], ["models", "list", "--js"]],
)
def test_abbreviations_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2


def test_every_command_has_the_common_flags() -> None:
    for argv in (["ask", "q"], ["run", "a", "t"], ["tui"], ["agents", "list"], ["ingest", "p", "-c", "abc"],
                 ["collections"], ["models", "list"], ["bench", "overhead"], ["report"]):
        args = parse(*argv, "--config", "c.toml", "--debug", "--home", "h")
        assert (args.config, args.debug, args.home) == ("c.toml", True, "h") and callable(args.handler)
