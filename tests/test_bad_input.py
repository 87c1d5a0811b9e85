"""Bad input and faults, as a user meets them: one line on stderr, the right exit code, the record kept.

Every case runs the console script on the fake backend (no engine): bad input
exits 2, an environment fault exits 1, and neither prints a traceback. The
README's "Failure behaviour" table lists the same cases.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import get_type_hints

import pytest

from tests.helpers import FAKE, cli, one_line
from vivace.config import Config, load_config
from vivace.errors import ConfigError

LONG_TASK = "tell me " * 5000  # 10k words: over the fake backend's 8192-token context


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


# ---- 1. bad input is exit 2, one line naming the key -------------------------------------------


@pytest.mark.parametrize(
    "toml, flags, env, fragments",
    [
        ("", ["--max-in-flight", "0"], {}, ["max_in_flight: 0 must be at least 1"]),
        ("", [], {"VIVACE_MAX_IN_FLIGHT": "0"}, ["max_in_flight: 0 must be at least 1", "VIVACE_MAX_IN_FLIGHT"]),
        ("max_in_flight = 0\n", [], {}, ["max_in_flight: 0 must be at least 1", "vivace.toml"]),
        ("max_tokens = 1e400\n", [], {}, ["max_tokens: inf is not a finite number"]),
        ("temperature = nan\n", [], {}, ["temperature: nan is not a finite number"]),
        ("kv_cache_space_gib = 0\n", [], {}, ["kv_cache_space_gib: 0.0 must be greater than 0"]),
        ("", ["--base-url", "http://[::1"], {}, ["base_urls: 'http://[::1' is not a valid URL"]),
        ("", ["--max-model-len", "0"], {}, ["max_model_len: 0 must be at least 1"]),
    ],
    ids=["flag", "env", "toml", "toml-inf", "toml-nan", "kv-space", "url", "max-model-len"],
)
def test_bad_config_values(tmp_path: Path, home: Path, toml: str, flags: list[str], env: dict[str, str],
                           fragments: list[str]) -> None:
    if toml:
        (tmp_path / "vivace.toml").write_text(toml)
    one_line(cli("ask", "hi", *FAKE, *flags, home=home, cwd=tmp_path, env=env), 2, *fragments)


def test_config_file_not_utf8(tmp_path: Path, home: Path) -> None:
    (tmp_path / "latin1.toml").write_bytes(b'model = "caf\xe9"\n')
    one_line(cli("ask", "hi", *FAKE, "--config", "latin1.toml", home=home, cwd=tmp_path), 2, "latin1.toml: not UTF-8")


NUMERIC = [f for f in dataclasses.fields(Config) if get_type_hints(Config)[f.name] in (int, float, int | None, float | None)]


@pytest.mark.parametrize("key", [f.name for f in NUMERIC])
def test_every_numeric_key_has_bounds_and_refuses_inf_and_nan(key: str) -> None:
    """A new numeric key must say its range in its field metadata, like ``choices``."""
    meta = next(f for f in NUMERIC if f.name == key).metadata
    assert any(meta.get(b) is not None for b in ("min", "above", "max")), f"{key} has no bounds"
    for bad in (math.inf, -math.inf, math.nan, "inf", "nan"):
        with pytest.raises(ConfigError, match=f"^{key}: "):
            load_config(overrides={key: bad}, environ={})
    low = meta.get("min")
    below = (low - 1) if low is not None else meta["above"]
    with pytest.raises(ConfigError, match=f"^{key}: .* must be "):
        load_config(overrides={key: below}, environ={})


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'steps = ["planner"]\n', "steps must be a table"),
        (b'[steps]\na = { agent = "answer", max_branches = "many" }\n', "max_branches must be a whole number, got 'many'"),
        (b'[steps]\na = { agent = "answer", max_branches = 1e400 }\n', "max_branches must be a whole number, got inf"),
        (b'[steps]\na = { agent = "answer", fan_out = "yes" }\n', "fan_out must be true or false"),
        (b'edges = "a"\n[steps]\na = "answer"\n', "edges must be an array"),
        (b'name = "caf\xe9"\n[steps]\na = "answer"\n', "not UTF-8 text"),
    ],
    ids=["steps-list", "branches-word", "branches-inf", "fan-out-word", "edges-string", "not-utf8"],
)
def test_bad_pipeline_files(tmp_path: Path, home: Path, body: bytes, fragment: str) -> None:
    (tmp_path / "p.toml").write_bytes(body)
    one_line(cli("run", "p.toml", "task", *FAKE, home=home, cwd=tmp_path), 2, "p.toml", fragment)


def test_pipeline_that_is_a_directory(tmp_path: Path, home: Path) -> None:
    (tmp_path / "p.toml").mkdir()
    one_line(cli("run", "p.toml", "task", *FAKE, home=home, cwd=tmp_path), 2, "p.toml is a directory")


# ---- 2. undecodable bytes in argv ----------------------------------------------------------------


def test_non_utf8_question_is_answered_and_recorded(tmp_path: Path, home: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    out = cli("ask", b"caf\xe9", *FAKE, "--mode", "normal", "--json", "--trace-out", str(trace), home=home, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["question"] == "caf\ufffd" and record["status"] == "done"
    assert json.loads(trace.read_text(encoding="utf-8"))["run_id"] == record["run_id"]
    saved = (home / "runs" / "runs.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(saved[-1])["question"] == "caf\ufffd"
    plain = cli("run", "answer", b"caf\xe9", *FAKE, home=home, cwd=tmp_path)  # printed, not JSON-encoded
    assert plain.returncode == 0 and "caf\ufffd" in plain.stdout, plain.stderr[-2000:]


# ---- 3. where the record goes, checked before the run ---------------------------------------------


def test_home_that_is_a_file_fails_before_the_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("")
    out = cli("ask", "hi", *FAKE, "--mode", "normal", home=home, cwd=tmp_path)
    one_line(out, 1, f"home {home} is not a directory")
    assert out.stdout == ""  # nothing answered, nothing lost


@pytest.mark.parametrize("command", [["ask", "hi", "--mode", "normal"], ["run", "answer", "hi"]])
def test_trace_out_that_is_a_directory_fails_before_the_run(tmp_path: Path, home: Path, command: list[str]) -> None:
    out = cli(*command, *FAKE, "--trace-out", str(tmp_path), home=home, cwd=tmp_path)
    one_line(out, 2, f"--trace-out {tmp_path} is a directory")
    assert out.stdout == "" and not (home / "runs" / "runs.jsonl").read_text()


def test_trace_out_in_an_unwritable_place(tmp_path: Path, home: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    one_line(cli("ask", "hi", *FAKE, "--trace-out", str(blocker / "t.jsonl"), home=home, cwd=tmp_path), 2,
             f"--trace-out {blocker / 't.jsonl'}: cannot write it")


def test_empty_vivace_home_means_the_default_home(tmp_path: Path) -> None:
    user = tmp_path / "user"
    work = tmp_path / "work"
    work.mkdir()
    out = cli("ask", "hi", *FAKE, "--mode", "normal", home=user, cwd=work, env={"VIVACE_HOME": "", "HOME": str(user)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert (user / ".cache" / "vivace" / "runs" / "runs.jsonl").is_file()
    assert list(work.iterdir()) == []  # not the current directory
    assert load_config(environ={"VIVACE_HOME": "", "VIVACE_MAX_TOKENS": " "}) == Config()
    with pytest.raises(ConfigError, match="home: must not be empty"):
        load_config(overrides={"home": ""}, environ={})


# ---- 4. the same fault, the same exit, said once ------------------------------------------------


@pytest.mark.parametrize(
    "extra, fragment",
    [(["--collection", "nosuch"], "collection 'nosuch' not found"),
     ([], "longer than the model's context of 8192 tokens")],
    ids=["missing-collection", "prompt-too-long"],
)
def test_ask_and_run_exit_alike_and_say_it_once(tmp_path: Path, home: Path, extra: list[str], fragment: str) -> None:
    task = LONG_TASK if not extra else "hi"
    asked = cli("ask", task, *FAKE, "--mode", "normal", *extra, home=home, cwd=tmp_path)
    ran = cli("run", "answer", task, *FAKE, *extra, home=home, cwd=tmp_path)
    for out in (asked, ran):
        assert out.returncode == 2, out.stderr[-2000:]
        assert out.stderr.count(fragment) == 1, out.stderr  # the CLI's error line, not an event line as well
        assert "Traceback" not in out.stderr
    records = [json.loads(line) for line in (home / "runs" / "runs.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["failed", "failed"]  # both runs kept their record


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
@pytest.mark.parametrize("command", [["ask", "hi"], ["run", "answer", "hi"]])
def test_temperature_flag_is_checked_like_the_toml_key(tmp_path: Path, home: Path, command: list[str], value: str) -> None:
    one_line(cli(*command, *FAKE, "--temperature", value, home=home, cwd=tmp_path), 2, "temperature: ")


def test_max_tokens_zero_names_max_tokens(tmp_path: Path, home: Path) -> None:
    line = one_line(cli("ask", "hi", *FAKE, "--max-tokens", "0", home=home, cwd=tmp_path), 2, "max_tokens: 0 must be at least 1")
    assert "max_points" not in line


@pytest.mark.parametrize(
    "argv, hint",
    [(["ask", "hi", "--bogus"], "see vivace ask --help"), (["ask"], "see vivace ask --help"),
     (["run", "answer", "t", "--max-branches", "x"], "see vivace run --help"),
     (["bench", "load", "--bogus"], "see vivace bench load --help"), (["nosuch"], "see vivace --help")],
)
def test_argparse_errors_are_one_line(tmp_path: Path, home: Path, argv: list[str], hint: str) -> None:
    one_line(cli(*argv, home=home, cwd=tmp_path), 2, hint)


@pytest.mark.parametrize(
    "flags, fragment",
    [(["--configs", "models"], "--configs models needs --step-model NAME"),
     (["--step-model", "small"], "--step-model: unknown model 'small'; the config names no [models.NAME]")],
)
def test_bench_pipeline_step_model_is_checked_before_the_engine(tmp_path: Path, home: Path, flags: list[str],
                                                                fragment: str) -> None:
    one_line(cli("bench", "pipeline", *FAKE, *flags, "--out", str(tmp_path / "out"), home=home, cwd=tmp_path), 2,
             fragment)
    assert not (tmp_path / "out").exists()  # refused before anything started or was written


def test_help_is_unchanged(tmp_path: Path, home: Path) -> None:
    out = cli("ask", "--help", home=home, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("usage: vivace ask ") and "--temperature" in out.stdout
