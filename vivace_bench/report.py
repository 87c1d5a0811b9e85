"""`vivace report`: one self-contained page from the latest output of every `vivace bench`.

The page reads only the ``report.json`` files and plots the benches wrote; it
times nothing itself. Images are embedded as data URIs and the style is
inline, so the HTML opens in a browser with no network. A Markdown twin with
the same tables sits beside it, its images copied next to it.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vivace_bench.report_sections import ORDER, Table, tables_for

log = logging.getLogger(__name__)


@dataclass
class BenchRun:
    bench: str
    path: Path  # the report.json
    data: dict[str, Any]
    images: list[Path] = field(default_factory=list)

    @property
    def created(self) -> str:
        return str(self.data.get("created_at") or time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.path.stat().st_mtime)))


def _bench_name(path: Path, data: dict[str, Any]) -> str:
    name = data.get("bench")
    if isinstance(name, str) and name:
        return name
    folder = path.parent.name
    return folder.removeprefix("bench-") if folder.startswith("bench-") else folder


def find_runs(run_dirs: list[Path]) -> dict[str, BenchRun]:
    """The latest run of each bench under ``run_dirs`` (each a run folder or a parent of them)."""
    from vivace.errors import InputError

    found: list[Path] = []
    for folder in run_dirs:
        if not folder.exists():
            raise InputError(f"run directory {folder} does not exist")
        if not folder.is_dir():
            raise InputError(f"{folder} is not a directory")
        here = [folder / "report.json"] if (folder / "report.json").is_file() else sorted(folder.glob("*/report.json"))
        if not here:
            raise InputError(f"no report.json in {folder} or its subfolders: run a `vivace bench ...` command first")
        found.extend(here)
    latest: dict[str, BenchRun] = {}
    for path in found:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        if not isinstance(data, dict):
            log.warning("skipping %s: not a JSON object", path)
            continue
        run = BenchRun(_bench_name(path, data), path, data, sorted(path.parent.glob("*.png")))
        if run.bench not in latest or path.stat().st_mtime > latest[run.bench].path.stat().st_mtime:
            latest[run.bench] = run
    if not latest:
        raise InputError("no readable report.json found")
    return latest


def ordered(runs: dict[str, BenchRun]) -> list[BenchRun]:
    known = [runs[name] for name in ORDER if name in runs]
    return known + [runs[name] for name in sorted(set(runs) - set(ORDER))]


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#1d2330;padding:0 1em}
h1{border-bottom:3px solid #4c72b0;padding-bottom:.3em}h2{margin-top:2em;color:#2b4a80}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #c8cfdb;padding:.3em .6em;text-align:right}
th{background:#e8eef8}td:first-child,th:first-child{text-align:left}caption{text-align:left;font-weight:600;margin-bottom:.3em}
img{max-width:100%;border:1px solid #dde3ec;margin:.5em 0}pre{background:#f5f7fa;padding:.8em;overflow-x:auto;font-size:.8em}
.meta{color:#5a6475;font-size:.9em}nav a{margin-right:1em}td.text{text-align:left}td:not(.text){white-space:nowrap}
"""

_NUMBER = re.compile(r"[-+×x]?[\d.,]+(e[-+]?\d+)?\s*(%|s|×)?( / [-+]?[\d.,]+%?)?|-")


def _td(value: object) -> str:
    """A cell; numbers align right, words (statuses, reasons, names) left."""
    text = str(value)
    cls = "" if _NUMBER.fullmatch(text) else " class='text'"
    return f"<td{cls}>{html.escape(text)}</td>"


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in table.rows)
    return f"<table><caption>{html.escape(table.title)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(table: Table) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = [f"**{table.title}**", "", "| " + " | ".join(cell(c) for c in table.columns) + " |", "|" + " --- |" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _details(title: str, value: Any) -> str:
    if not value:
        return ""
    return f"<details><summary>{html.escape(title)}</summary><pre>{html.escape(json.dumps(value, indent=2, default=str))}</pre></details>"


def render_html(runs: list[BenchRun], sources: list[Path]) -> str:
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>vivace efficiency report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>vivace efficiency report</h1>",
        f"<p class='meta'>Generated {html.escape(time.strftime('%Y-%m-%d %H:%M:%S %Z'))} from "
        f"{len(runs)} bench output(s) in {html.escape(', '.join(str(s) for s in sources))}. "
        "Every figure comes from a bench's report.json; speedups are ratios measured side by side in one run.</p>",
        "<nav>" + "".join(f"<a href='#{html.escape(r.bench)}'>{html.escape(r.bench)}</a>" for r in runs) + "</nav>",
    ]
    for run in runs:
        parts.append(f"<h2 id='{html.escape(run.bench)}'>{html.escape(run.bench)}</h2>")
        parts.append(f"<p class='meta'>{html.escape(str(run.path))} · {html.escape(run.created)}</p>")
        for table in tables_for(run.bench, run.data):
            parts.append(_html_table(table))
        for image in run.images:
            data = base64.b64encode(image.read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(image.name)}' src='data:image/png;base64,{data}'><figcaption class='meta'>{html.escape(image.name)}</figcaption></figure>")
        parts.append(_details("configuration", run.data.get("config") or run.data.get("setup")))
        parts.append(_details("machine", run.data.get("machine")))
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(runs: list[BenchRun], image_dir: Path, md_path: Path) -> str:
    lines = ["# vivace efficiency report", "", f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')}. Every figure comes from a bench's report.json.", ""]
    for run in runs:
        lines += [f"## {run.bench}", "", f"`{run.path}` · {run.created}", ""]
        for table in tables_for(run.bench, run.data):
            lines += [_md_table(table), ""]
        for image in run.images:
            image_dir.mkdir(parents=True, exist_ok=True)
            copy = image_dir / f"{run.bench}-{image.name}"
            shutil.copyfile(image, copy)
            lines += [f"![{run.bench} {image.name}]({copy.relative_to(md_path.parent).as_posix()})", ""]
        machine = run.data.get("machine")
        if machine:
            lines += ["Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), ""]
        config = run.data.get("config") or run.data.get("setup")
        if config:
            lines += ["<details><summary>configuration</summary>", "", "```json", json.dumps(config, indent=2, default=str), "```", "", "</details>", ""]
    return "\n".join(lines)


def write_report_pages(run_dirs: list[Path], out: Path) -> tuple[Path, Path, list[BenchRun]]:
    runs = ordered(find_runs(run_dirs))
    out.parent.mkdir(parents=True, exist_ok=True)
    md = out.with_suffix(".md")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_html(runs, run_dirs), encoding="utf-8")
    tmp.replace(out)
    md.write_text(render_markdown(runs, out.parent / f"{out.stem}_files", md), encoding="utf-8")
    return out, md, runs
