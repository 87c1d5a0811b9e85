"""The documentation: the site builds strictly, its references are complete, the README stays short,
and every Python example in the README and the docs runs as written.

The site is built once per module (``mkdocs build --strict``, a few seconds, no network). The CLI and
configuration pages are generated from the parser and the ``Config`` dataclass by ``docs/hooks.py``;
the checks here walk the same parser and dataclass, so a new command, flag or key that the page
lacks fails. Python examples (fenced ```python blocks) run on the fake backend
(``VIVACE_BACKEND=fake``), a ``--8<--`` include with the file it includes; the ones that talk to ``vivace serve`` at ``http://127.0.0.1:8000`` run
against a real ``vivace serve`` on the fake backend, on a free port substituted into the text. The
engine examples under ``examples/`` run in ``tests/test_examples.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.test_cli import cli_env
from vivace.cli import build_parser
from vivace.config import Config

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
SERVE_URL = "http://127.0.0.1:8000"  # what the serving examples name; replaced by the test server's URL
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def doc_files() -> list[Path]:
    return [README, ROOT / "CHANGELOG.md", *sorted(DOCS.rglob("*.md"))]


SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.M)  # pymdownx.snippets: a file shown as it is


def python_examples() -> list[tuple[str, int, str]]:
    out = []
    for file in doc_files():
        for i, m in enumerate(PYTHON_BLOCK.finditer(file.read_text(encoding="utf-8"))):
            code = SNIPPET.sub(lambda s: (ROOT / s.group(1)).read_text(encoding="utf-8"), m.group(1))
            out.append((str(file.relative_to(ROOT)), i, code))
    return out


EXAMPLES = python_examples()


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from commands(sub, (*path, name))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    started = time.monotonic()
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
                           capture_output=True, text=True, cwd=ROOT, timeout=300,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert time.monotonic() - started < 120, "the docs build should take seconds"
    return out


def page(site: Path, name: str) -> str:
    return html.unescape((site / name / "index.html").read_text(encoding="utf-8"))


def test_site_builds_strictly_with_every_page(site: Path) -> None:
    for md in DOCS.rglob("*.md"):
        rel = md.relative_to(DOCS).with_suffix("")
        built = site / ("index.html" if rel.name == "index" and rel.parent == Path(".") else
                        rel.parent / "index.html" if rel.name == "index" else rel / "index.html")
        assert built.is_file(), f"{md} was not built"
    assert not (site / "hooks.py").exists()


def test_cli_page_has_every_command_and_option(site: Path) -> None:
    text = page(site, "cli")
    found = list(commands(build_parser()))
    starts = {}
    for path, _ in found:
        anchor = f'id="vivace-{"-".join(path)}"'
        assert anchor in text, f"vivace {' '.join(path)} is missing from the CLI page"
        starts[path] = text.index(anchor)
    bounds = sorted(starts.values()) + [len(text)]
    for path, parser in found:
        section = text[starts[path]:bounds[bounds.index(starts[path]) + 1]]  # this command's own section
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert f"<code>{option}</code>" in section, f"vivace {' '.join(path)} {option} is missing"


def test_config_page_has_every_key_with_its_variable(site: Path) -> None:
    text = page(site, "configuration")
    text = text[text.index('id="every-key"'):]  # the generated table, not the examples above it
    for field in dataclasses.fields(Config):
        assert f"<code>{field.name}</code>" in text, f"config key {field.name} is missing from the configuration page"
        if field.name not in ("models", "mcp"):
            assert f"<code>VIVACE_{field.name.upper()}</code>" in text
        for choice in field.metadata.get("choices") or ():
            assert f"<code>{choice}</code>" in text


def test_every_bench_has_a_page_with_its_options(site: Path) -> None:
    benches = [path[1] for path, _ in commands(build_parser()) if len(path) == 2 and path[0] == "bench"]
    assert benches
    for name in benches:
        text = page(site, f"benchmarks/{name}")
        assert f'id="vivace-bench-{name}"' in text, f"docs/benchmarks/{name}.md lacks its generated options"


def test_api_reference_has_the_public_names(site: Path) -> None:
    import vivace

    text = page(site, "api")
    for name in vivace.__all__:
        if name not in ("__version__", "Node"):
            assert re.search(rf'id="vivace\.[\w.]*\b{re.escape(name)}"', text), f"{name} is missing from the API page"


def test_readme_is_short_and_its_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    assert "make demo" in text and "make test" in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_docs_name_no_machine_paths_or_secrets() -> None:
    for file in doc_files():
        text = file.read_text(encoding="utf-8")
        for bad in ("/work/", "/root/"):
            assert bad not in text, f"{file.relative_to(ROOT)} contains {bad!r}"
        assert not re.search(r"\b(sk-[A-Za-z0-9]{20,}|ghp_[A-Za-z0-9]{20,})", text), f"{file.relative_to(ROOT)}: a key?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``vivace serve`` on the fake backend, for the examples written against ``vivace serve``."""
    home = tmp_path_factory.mktemp("serve-home")
    port = _free_port()
    vivace = Path(sys.executable).parent / "vivace"
    proc = subprocess.Popen([str(vivace), "serve", "--port", str(port), "--backend", "fake"], env=cli_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "vivace serve exited"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "vivace serve did not answer /health"
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("where,index,code", EXAMPLES, ids=[f"{w}#{i}" for w, i, _ in EXAMPLES])
def test_python_example_runs(where: str, index: int, code: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if SERVE_URL in code:
        code = code.replace(SERVE_URL, request.getfixturevalue("fake_server"))
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**cli_env(tmp_path), "VIVACE_BACKEND": "fake"})
    assert out.returncode == 0, f"{where} example {index} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
