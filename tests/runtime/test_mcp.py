"""MCP tool sets with real MCP servers (``tests/data/mcp_facts_server.py``) over stdio and streamable HTTP.

No engine: the runtime's default model is the fake backend, or an OpenAI
endpoint nobody listens on where a test needs an engine start that fails.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from tests.helpers import VIVACE, cli_env, default_signals
from vivace.assembly import open_runtime
from vivace.config import Config
from vivace.errors import BackendError, ConfigError
from vivace.runtime.local_server import free_port
from vivace.runtime.mcp import open_mcp
from vivace.runtime.tool_path import ToolCall, ToolScope
from vivace.runtime.tools import ToolBox
from vivace.trace import ToolTrace

SERVER = str(Path(__file__).resolve().parents[1] / "data" / "mcp_facts_server.py")


def facts(**extra: Any) -> dict[str, Any]:
    """An ``[mcp.facts]`` table that runs the test server over stdio."""
    return {"command": sys.executable, "args": [SERVER], **extra}


def config(home: Path, **servers: dict[str, Any]) -> Config:
    return Config(home=home, backend="fake", mcp=servers)


def stdio_servers() -> list[psutil.Process]:
    """This process's live children that run the facts server over stdio."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = child.cmdline()
            if SERVER in cmd and "--http" not in cmd and child.status() != psutil.STATUS_ZOMBIE:
                out.append(child)
        except psutil.Error:
            continue
    return out


def test_tools_are_listed_with_their_schemas_and_the_server_name_is_a_set(tmp_path: Path) -> None:
    async def go() -> tuple[ToolBox, list[str], list[str]]:
        box = ToolBox()
        await open_mcp(config(tmp_path, facts=facts(tools=["lookup", "add"], pure=["lookup"], timeout_s=7)), box)
        try:
            return box, box.names(), [t.name for t in box.resolve(["facts"])]
        finally:
            await box.aclose()

    box, names, resolved = asyncio.run(go())
    assert names == ["facts.add", "facts.lookup"]  # the table's allow-list: fail and die are not registered
    assert sorted(resolved) == names and "facts" in box and box.sets() == {"facts": resolved}
    add, lookup = box.get("facts.add"), box.get("facts.lookup")
    assert add.source == "mcp:facts" and add.description == "Add two numbers." and add.timeout_s == 7
    assert add.parameters["required"] == ["a", "b"]
    assert add.parameters["properties"]["a"]["type"] == "number"
    assert lookup.parameters["properties"]["name"]["type"] == "string" and lookup.pure and not add.pure
    assert add.spec()["function"]["name"] == "facts.add"
    assert (tmp_path / "logs" / "mcp-facts.log").read_text().count("facts server: starting on stdio") == 1
    assert stdio_servers() == []  # closed with the box


def test_calls_go_through_the_tool_path_errors_become_results_and_a_dead_server_fails_cleanly(tmp_path: Path) -> None:
    records: list[ToolTrace] = []
    scope = ToolScope(agent="tester", record=records.append)

    async def go() -> dict[str, Any]:
        runtime = await open_runtime(config(tmp_path, facts=facts(pure=["lookup"], timeout_s=20)))
        out: dict[str, Any] = {}
        try:
            path = runtime.tool_path
            reached: list[dict[str, Any]] = []
            add = runtime.tools.get("facts.add")
            inner = add.fn

            async def counted(**arguments: Any) -> Any:
                reached.append(arguments)
                return await inner(**arguments)

            add.fn = counted
            out["add"] = await path(ToolCall("facts.add", {"a": 1.5, "b": 2}), scope=scope)
            out["lookup"] = await path(ToolCall("facts.lookup", '{"name": "Alpha"}'), scope=scope)
            out["lookup_again"] = await path(ToolCall("facts.lookup", {"name": "Alpha"}), scope=scope)
            out["fail"] = await path(ToolCall("facts.fail", {}), scope=scope)
            out["bad_type"] = await path(ToolCall("facts.add", {"a": "one", "b": 2}), scope=scope)
            out["missing"] = await path(ToolCall("facts.add", {"a": 1}), scope=scope)
            out["reached"] = list(reached)
            out["after_error"] = await path(ToolCall("facts.add", {"a": 2, "b": 2}), scope=scope)
            out["die"] = await path(ToolCall("facts.die", {}), scope=scope)
            out["after_death"] = await path(ToolCall("facts.add", {"a": 1, "b": 1}), scope=scope)
            out["other_after_death"] = await path(ToolCall("facts.lookup", {"name": "beta"}), scope=scope)
        finally:
            await runtime.aclose()
        return out

    out = asyncio.run(go())
    assert out["add"].ok and out["add"].value == {"result": 3.5} and json.loads(out["add"].content) == {"result": 3.5}
    assert out["lookup"].value == {"result": "Alpha is 4000 m high."}
    assert out["lookup_again"].trace.cache_hit and out["lookup_again"].value == out["lookup"].value  # pure: cached
    # The server's tool error is the call's error result, with the server's text; the run goes on.
    assert out["fail"].error is not None and "the facts database is locked" in out["fail"].error
    assert out["fail"].content.startswith("error: ")
    assert out["after_error"].ok and out["after_error"].value == {"result": 4.0}
    # Arguments that break the server's inputSchema are refused before the server is asked.
    assert out["bad_type"].error.startswith("invalid arguments for facts.add: a: 'one' is not of type 'number'")
    assert out["missing"].error.startswith("invalid arguments for facts.add") and "'b' is a required" in out["missing"].error
    assert out["reached"] == [{"a": 1.5, "b": 2}]  # only the valid call reached the tool's function
    # A server that dies mid-call: that call and later ones fail with a recorded error, no hang.
    assert "closed the connection" in out["die"].error and "dying on request" in out["die"].error
    for key in ("after_death", "other_after_death"):
        assert out[key].error is not None and "mcp server 'facts'" in out[key].error
    assert [r.name for r in records] == ["facts.add", "facts.lookup", "facts.lookup", "facts.fail", "facts.add",
                                         "facts.add", "facts.add", "facts.die", "facts.add", "facts.lookup"]
    assert all(r.source == "mcp:facts" and r.agent == "tester" for r in records)
    assert [r.error is None for r in records] == [True, True, True, False, False, False, True, False, False, False]
    assert stdio_servers() == []


@pytest.mark.parametrize(("table", "expected"), [
    ({"command": "/nonexistent/mcp-server"}, "command not found: /nonexistent/mcp-server"),
    ({"command": sys.executable, "args": ["-c", "import sys; print('no such database', file=sys.stderr); sys.exit(2)"]},
     "closed the connection during the MCP handshake (its stderr: no such database)"),
    ({"command": sys.executable, "args": ["-c", "import time; time.sleep(600)"], "startup_timeout_s": 1},
     "no MCP handshake within 1 s"),
    (facts(tools=["lookup", "nope"]), "mcp.broken.tools names nope, which it does not have"),
])
def test_a_server_that_fails_to_start_is_one_line_and_the_others_are_closed(tmp_path: Path, table: dict[str, Any],
                                                                           expected: str) -> None:
    async def go() -> ToolBox:
        box = ToolBox()
        await open_mcp(config(tmp_path, good=facts(), broken=table), box)
        return box

    with pytest.raises(BackendError) as info:
        asyncio.run(go())
    message = str(info.value)
    assert message.startswith("mcp server 'broken'") and expected in message and "\n" not in message
    assert stdio_servers() == []  # the good server, started beside it, was closed


def test_mcp_servers_start_before_the_engine_and_close_when_it_fails(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/v1"
    engine = dict(backend="openai", base_urls=[nobody], connect_retries=0, request_timeout_s=5)
    bad = Config(home=tmp_path, mcp={"broken": {"command": "/nonexistent/mcp-server"}}, **engine)
    with pytest.raises(BackendError, match="^mcp server 'broken' failed to start"):  # before any engine start
        asyncio.run(open_runtime(bad))
    good = Config(home=tmp_path, mcp={"facts": facts()}, **engine)
    with pytest.raises(BackendError) as info:
        asyncio.run(open_runtime(good))
    assert "mcp" not in str(info.value)  # the engine's own failure...
    assert (tmp_path / "logs" / "mcp-facts.log").read_text().count("starting on stdio") == 1  # ...after MCP started
    assert stdio_servers() == []  # ...and the MCP server was closed again


@pytest.mark.parametrize(("table", "key"), [
    ({"x": {"command": "a", "url": "http://127.0.0.1:1/mcp"}}, "mcp.x:"),
    ({"x": {}}, "mcp.x:"),
    ({"x": {"command": "a", "bogus": 1}}, "mcp.x: unknown key 'bogus'"),
    ({"x": {"command": "a", "args": "one"}}, "mcp.x.args:"),
    ({"x": {"command": "a", "timeout_s": 0}}, "mcp.x.timeout_s:"),
    ({"x": {"url": "ftp://host/mcp"}}, "mcp.x.url:"),
    ({"x": {"command": "a", "env": {"K": 1}}}, "mcp.x.env:"),
    ({"x.y": {"command": "a"}}, "mcp.x.y:"),
])
def test_bad_mcp_tables_are_one_line_naming_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config(mcp=table)
    assert str(info.value).startswith(key) and "\n" not in str(info.value)


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VIVACE, *args], capture_output=True, text=True, env=cli_env(home), timeout=300,
                          start_new_session=True, preexec_fn=default_signals)


def test_tools_list_cli_starts_the_servers_without_an_engine(tmp_path: Path) -> None:
    toml = tmp_path / "vivace.toml"
    toml.write_text(f'[mcp.facts]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(SERVER)}]\n'
                    'pure = ["lookup"]\n')  # backend stays vllm: listing tools must not start it
    out = cli("tools", "list", "--json", "--config", str(toml), home=tmp_path / "home")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout.strip().splitlines()[-1])
    by_name = {t["name"]: t for t in record["tools"]}
    assert {"facts.lookup", "facts.add", "facts.fail", "facts.die"} <= set(by_name)
    assert by_name["facts.lookup"]["source"] == "mcp:facts" and by_name["facts.lookup"]["pure"] is True
    assert by_name["facts.add"]["summary"] == "a: number, b: number"
    assert sorted(record["sets"]["facts"]) == sorted(n for n in by_name if n.startswith("facts."))

    toml.write_text('[mcp.facts]\ncommand = "/nonexistent/mcp-server"\n')
    out = cli("tools", "list", "--config", str(toml), home=tmp_path / "home")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == "error: mcp server 'facts' failed to start: command not found: /nonexistent/mcp-server"

    toml.write_text('[mcp.facts]\ncommand = "x"\nport = 1\n')
    out = cli("tools", "list", "--config", str(toml), home=tmp_path / "home")
    assert out.returncode == 2 and out.stderr.startswith("error: mcp.facts: unknown key 'port'")
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    """The facts server over streamable HTTP on 127.0.0.1, as its own process."""
    port = free_port()
    log = (tmp_path / "http-server.log").open("w")
    proc = subprocess.Popen([sys.executable, SERVER, "--http", str(port)], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + 120  # generous: how long to wait for the start, not a check on speed
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the HTTP MCP server exited: {(tmp_path / 'http-server.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the HTTP MCP server did not start listening")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_a_streamable_http_server_serves_tool_calls(tmp_path: Path, http_server: str) -> None:
    async def go() -> tuple[list[str], Any, Any]:
        runtime = await open_runtime(config(tmp_path, web={"url": http_server, "timeout_s": 20}))
        try:
            names = runtime.tools.names()
            ok = await runtime.tool_path(ToolCall("web.lookup", {"name": "beta"}))
            failed = await runtime.tool_path(ToolCall("web.fail", {}))
            return names, ok, failed
        finally:
            await runtime.aclose()

    names, ok, failed = asyncio.run(go())
    assert {"web.lookup", "web.add", "web.fail", "web.die"} <= set(names)
    assert ok.ok and ok.value == {"result": "Beta is 5000 m high."} and ok.trace.source == "mcp:web"
    assert "the facts database is locked" in failed.error
