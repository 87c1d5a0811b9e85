"""The registry and entry-point discovery, with plug-in packages installed for real.

``examples/vivace-tldr`` is the documented example; ``tests/agents/data/vivace-test-plugins``
adds a decorator-form plug-in, one that fails mid-run, one that fails at import and one
that calls ``sys.exit(7)`` at import.
They are built and installed (not editable) into a private folder that only the CLI
subprocesses see, on PYTHONPATH: the venv running the suite is shared and is never changed.
The CLI runs here use ``--backend fake``: they test discovery and the run's plumbing
(attribution, traces, errors), not generation.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from tests.helpers import VIVACE, cli_env
from vivace.agents.base import Agent
from vivace.agents.registry import REGISTRY, FunctionAgent, Registry, agent, as_agent

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"vivace-tldr": ROOT / "examples" / "vivace-tldr",
            "vivace-test-plugins": Path(__file__).parent / "data" / "vivace-test-plugins"}


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the plug-ins are installed into (no network, no build isolation: setuptools is here).

    Sources are copied first so the build's ``build/`` and ``*.egg-info`` land in the copy, not the repo.
    """
    work = tmp_path_factory.mktemp("plugins")
    sources = []
    for name, path in PACKAGES.items():
        shutil.copytree(path, work / name, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        sources.append(str(work / name))
    target = work / "site"
    out = pip("install", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), *sources)
    assert out.returncode == 0, out.stdout + out.stderr
    return target


def vivace(home: Path, plugins: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(home)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugins), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([VIVACE, *args], capture_output=True, text=True, env=env, timeout=300)


def test_agents_list_finds_plugins_and_skips_the_broken_one(installed: Path, tmp_path: Path) -> None:
    out = vivace(tmp_path, installed, "agents", "list", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout.strip().splitlines()[-1])
    sources = {a["name"]: a["source"] for a in record["agents"]}
    assert sources["tldr"] == "plug-in vivace-tldr 0.1.0"
    assert sources["shout"] == sources["explode"] == "plug-in vivace-test-plugins 0.0.1"
    assert sources["research"] == sources["answer"] == sources["sot"] == "built-in"
    skipped = {s["entry_point"]: s["error"] for s in record["skipped"]}
    assert skipped.keys() == {"broken", "exits"} and skipped["exits"] == "SystemExit: 7"
    assert "skipped agent plug-in 'broken'" in out.stderr and "broken on purpose" in out.stderr
    assert "skipped agent plug-in 'exits'" in out.stderr  # sys.exit(7) at import: skipped, not our exit code
    assert "Traceback" not in out.stderr
    table = vivace(tmp_path, installed, "agents", "list")
    assert table.returncode == 0 and "tldr" in table.stdout and "vivace-tldr" in table.stdout
    assert "shout" in table.stdout and "skipped plug-in 'exits'" in table.stderr
    # Installed where only the subprocesses look: this process (and the shared venv) never sees them.
    assert importlib.util.find_spec("vivace_tldr") is None and (installed / "vivace_tldr" / "prompts").is_dir()


def test_run_a_plugin(installed: Path, tmp_path: Path) -> None:
    out = vivace(tmp_path, installed, "run", "tldr", "Tea is made from leaves. It is popular.",
                 "--backend", "fake", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["agent"] == "tldr" and "Keywords:" in record["answer"]
    assert [a["name"] for a in record["agents"]] == ["tldr"] and record["agents"][0]["calls"] == 2
    assert {c["agent"] for c in record["calls"]} == {"tldr"}
    shout = vivace(tmp_path, installed, "run", "shout", "quiet words", "--backend", "fake")
    assert shout.returncode == 0 and "QUIET WORDS" in shout.stdout


def test_a_plugin_failing_mid_run_is_named_and_the_trace_is_written(installed: Path, tmp_path: Path) -> None:
    pipe = tmp_path / "fails.toml"
    pipe.write_text('edges = [["first", "boom"]]\n[steps]\nfirst = "answer"\nboom = "explode"\n')
    trace_file = tmp_path / "trace.jsonl"
    out = vivace(tmp_path, installed, "run", str(pipe), "Explain tea.", "--backend", "fake",
                 "--trace-out", str(trace_file))
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last == "error: agent 'explode' failed (step 'boom'): boom from a plug-in", out.stderr
    assert "Traceback" not in out.stderr
    for path in (trace_file, tmp_path / "runs" / "runs.jsonl"):
        record = json.loads(path.read_text().splitlines()[-1])
        assert record["error"] and [c["agent"] for c in record["calls"]] == ["answer"]


def test_discovery_skips_what_fails_and_keeps_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()
    eps = [
        EntryPoint("gone", "no_such_module_xyz:agent", "vivace.agents"),
        EntryPoint("notagent", "os.path:join", "vivace.agents"),
        EntryPoint("sot2", "vivace.agents.builtin:SotAgent", "vivace.agents"),
    ]
    with caplog.at_level(logging.WARNING):
        registry.load_plugins(eps)
    assert [name for name, _ in registry.broken] == ["gone", "notagent"]
    assert "skipped agent plug-in 'gone'" in caplog.text
    assert registry._agents["sot"].agent.name == "sot"  # the class was instantiated


def test_sys_exit_at_import_is_a_broken_plugin_but_ctrl_c_is_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "vivace_exits_now.py").write_text("import sys\nsys.exit(7)\n")
    (tmp_path / "vivace_ctrl_c_now.py").write_text("raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    registry.load_plugins([EntryPoint("exits", "vivace_exits_now:agent", "vivace.agents"),
                           EntryPoint("sot2", "vivace.agents.builtin:SotAgent", "vivace.agents")])
    assert registry.broken == [("exits", "SystemExit: 7")] and "sot" in registry._agents
    with pytest.raises(KeyboardInterrupt):
        Registry().load_plugins([EntryPoint("ctrl_c", "vivace_ctrl_c_now:agent", "vivace.agents")])


def test_as_agent_forms() -> None:
    async def fn(inp, ctx):  # type: ignore[no-untyped-def]
        """Doc line."""
        return "x"

    made = as_agent(fn, "fn_agent")
    assert isinstance(made, FunctionAgent) and made.name == "fn_agent" and made.description == "Doc line."
    with pytest.raises(TypeError, match="async"):
        FunctionAgent(lambda inp, ctx: "x", "sync", "")

    class Mine(Agent):
        name = "mine"

    assert as_agent(Mine).name == "mine"


def test_subclasses_of_a_decorated_agent_resolve_to_themselves() -> None:
    @agent("t_base")
    class Base(Agent):
        name = "base"

    class Plain(Base):  # not decorated: inherits the mark, must not inherit the agent
        name = "plain"

    @agent("t_child")
    class Child(Base):
        pass

    try:
        assert as_agent(Base) is Base.__vivace_agent__ and as_agent(Base).name == "t_base"
        plain = as_agent(Plain)
        assert type(plain) is Plain and plain.name == "plain"
        child = as_agent(Child)
        assert child is Child.__dict__["__vivace_agent__"] and type(child) is Child and child.name == "t_child"
        assert REGISTRY._agents["t_base"].agent is as_agent(Base)
    finally:
        REGISTRY.unregister("t_base")
        REGISTRY.unregister("t_child")


def test_builtins_cannot_be_shadowed_by_a_plugin() -> None:
    registry = Registry()
    registry.ensure_loaded()
    impostor = FunctionAgent(_noop, "research", "impostor")
    registry.register(impostor, "plug-in evil 1.0")
    assert registry.get("research") is not impostor


async def _noop(inp, ctx):  # type: ignore[no-untyped-def]
    return ""
