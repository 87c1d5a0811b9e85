"""A run's options are one validated type: a misspelt or mistyped key fails in one line, before any model call."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from vivace.agents.driver import ask, run
from vivace.agents.options import RunOptions
from vivace.agents.sot.options import SotOptions
from vivace.assembly import runtime_for
from vivace.config import Config
from vivace.errors import InputError
from vivace.runtime.fake import FakeBackend
from vivace.runtime.runtime import Runtime


def fake_runtime(tmp_path: Path) -> tuple[FakeBackend, Runtime]:
    backend = FakeBackend()
    return backend, runtime_for(Config(backend="fake", home=tmp_path), backend, save_runs=False)


@pytest.mark.parametrize(("given", "message"), [
    ({"max_branch": 3}, "unknown run option 'max_branch' (did you mean 'max_branches'?)"),
    ({"max_point": 4}, "unknown run option 'max_point' (did you mean 'max_points'?)"),
    ({"zzz": 1}, "unknown run option 'zzz'; known: model, max_tokens"),
])
def test_an_unknown_key_names_its_close_match(given: dict[str, object], message: str) -> None:
    with pytest.raises(InputError) as err:
        RunOptions.parse(given)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("given", "key"), [
    ({"max_points": "many"}, "max_points"), ({"max_branches": 0}, "max_branches"), ({"temperature": -1}, "temperature"),
    ({"tool_cache": "perhaps"}, "tool_cache"),
])
def test_a_bad_value_is_one_line_naming_its_key(given: dict[str, object], key: str) -> None:
    with pytest.raises(InputError) as err:
        RunOptions.parse(given)
    assert str(err.value).startswith(f"run option {key}:") and "\n" not in str(err.value)


def test_options_are_frozen_and_round_trip() -> None:
    opts = RunOptions.parse({"mode": "sot", "max_points": "3", "max_tokens": None})
    assert opts.max_points == 3 and opts.max_tokens is None
    with pytest.raises(ValidationError):
        opts.max_points = 4
    assert opts.as_dict() == {"mode": "sot", "max_points": 3}  # only what was set: a checkpoint header's form
    assert RunOptions.parse(opts.as_dict()) == opts
    assert opts.replace(mode=None, max_tokens=9).as_dict() == {"max_points": 3, "max_tokens": 9}
    assert RunOptions.parse(opts) is opts


def test_a_misspelt_run_option_fails_before_any_call(tmp_path: Path) -> None:
    backend, runtime = fake_runtime(tmp_path)
    with pytest.raises(InputError, match="did you mean 'max_branches'"):
        asyncio.run(run("research", "Explain tides.", runtime, options={"max_branch": 3}))
    with pytest.raises(InputError, match="did you mean 'max_points'"):
        asyncio.run(ask("Explain tides.", runtime, max_point=4))
    assert backend.requests == []


def test_sot_options_take_the_run_over_the_config(tmp_path: Path) -> None:
    _, runtime = fake_runtime(tmp_path)
    from vivace.agents.base import AgentContext, Tracer

    ctx = AgentContext(runtime, Tracer("r1"), options=RunOptions.parse({"max_points": 3, "mode": "sot"}))
    sot = SotOptions.for_run(ctx)
    assert (sot.mode, sot.max_points, sot.max_tokens) == ("sot", 3, runtime.config.max_tokens)
    assert not sot.safety_guard  # the guard is auto's, unless asked
    with pytest.raises(InputError, match="mode must be one of"):
        SotOptions.for_run(AgentContext(runtime, Tracer("r2"), options=RunOptions.parse({"mode": "fast"})))
