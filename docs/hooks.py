"""mkdocs hook: the CLI and configuration references, generated from the code at build time.

Pages hold markers that this hook replaces, so a reference cannot drift from the code:

- ``<!-- vivace:cli -->``: every command and subcommand of ``vivace``, from the argparse parser
  that ``vivace.cli.build_parser`` builds (usage, help, every option);
- ``<!-- vivace:cli bench sot -->``: one command's options only (the benchmark pages use it);
- ``<!-- vivace:changelog -->``: the repository's ``CHANGELOG.md``, its links made relative to ``docs/``;
- ``<!-- vivace:config -->``: every field of ``vivace.config.Config`` with its type, default,
  choices and bounds, the ``VIVACE_*`` variable, the flag that sets it and the comment beside it
  in ``vivace/config.py``.

Nothing here needs the network; importing ``vivace.cli`` loads no engine.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import re
import tokenize
from pathlib import Path
from typing import Any, Iterator

MARKER = re.compile(r"<!--\s*vivace:(cli|config|changelog)((?:\s+[\w-]+)*)\s*-->")
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the CLI


def _parser() -> argparse.ArgumentParser:
    os.environ["COLUMNS"] = "100"  # argparse wraps usage lines at the terminal's width
    from vivace.cli import build_parser

    return build_parser()


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            out.extend((name, helps.get(name, ""), sub) for name, sub in action.choices.items())
    return out


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str, argparse.ArgumentParser]]:
    """Every (command path, help, parser) below ``parser``, depth first, in ``--help`` order."""
    for name, help_text, sub in _subcommands(parser):
        yield (*path, name), help_text, sub
        yield from walk(sub, (*path, name))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _option_row(action: argparse.Action) -> str:
    if action.option_strings:
        name = ", ".join(f"`{s}`" for s in action.option_strings)
    else:
        name = f"`{action.metavar or action.dest}`"
    if action.nargs == 0:
        takes = ""
    elif action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        takes = " \\| ".join(f"`{c}`" for c in action.choices)
    else:
        metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
        metavar = " ".join(metavar) if isinstance(metavar, tuple) else metavar
        takes = f"`{metavar}`"
        if action.nargs in ("+", "*"):
            takes += " ..."
        if isinstance(action, argparse._AppendAction):
            takes += " (repeatable)"
    default = action.default
    shown = "" if default is None or default is False or default == argparse.SUPPRESS else f"`{default}`"
    help_text = (action.help or "") % {"default": default, "prog": "vivace"} if action.help else ""
    return f"| {name} | {takes} | {shown} | {_cell(help_text)} |"


def command_section(path: tuple[str, ...], help_text: str, parser: argparse.ArgumentParser, level: int = 2) -> str:
    lines = [f"{'#' * level} `vivace {' '.join(path)}`", ""]
    description = parser.description or help_text
    if description:
        lines += [_cell(description), ""]
    lines += ["```text", parser.format_usage().strip().removeprefix("usage: "), "```", ""]
    subs = _subcommands(parser)
    if subs:
        lines += ["| subcommand | what it does |", "| --- | --- |"]
        lines += [f"| [`{name}`](#vivace-{'-'.join((*path, name))}) | {_cell(h)} |" for name, h, _ in subs]
        lines.append("")
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if a.help != argparse.SUPPRESS and not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction))]
        if not actions:
            continue
        title = group.title or "options"
        lines += [f"**{title}**", "", "| option | takes | default | what it does |", "| --- | --- | --- | --- |"]
        lines += [_option_row(a) for a in actions]
        lines.append("")
    return "\n".join(lines)


def cli_reference() -> str:
    parser = _parser()
    lines = ["## `vivace`", "", parser.description or "", "",
             "```text", parser.format_usage().strip().removeprefix("usage: "), "```", "",
             "| command | what it does |", "| --- | --- |"]
    lines += [f"| [`{name}`](#vivace-{name}) | {_cell(h)} |" for name, h, _ in _subcommands(parser)]
    lines.append("")
    for path, help_text, sub in walk(parser):
        lines.append(command_section(path, help_text, sub, level=2 if len(path) == 1 else 3))
    return "\n".join(lines)


def cli_command(path: tuple[str, ...]) -> str:
    for found, help_text, sub in walk(_parser()):
        if found == path:
            return command_section(found, help_text, sub, level=3)
    raise ValueError(f"docs: no command 'vivace {' '.join(path)}' in the parser")


# ---------------------------------------------------------------- the config


def _field_comments(source: Path) -> dict[str, str]:
    """The comment written beside each Config field in ``vivace/config.py`` (on its last line)."""
    text = source.read_text(encoding="utf-8")
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("class Config"))
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(text).readline) if tok.type == tokenize.COMMENT}
    out: dict[str, str] = {}
    number = first + 1
    while number < len(lines):
        line = lines[number]
        number += 1  # 1-based number of this line
        if line.startswith("    def ") or (line and not line.startswith(" ")):
            break
        m = re.match(r"    (\w+): ", line)
        if not m:
            continue
        end, depth = number, line.count("(") - line.count(")")
        while depth > 0 and end < len(lines):
            depth += lines[end].count("(") - lines[end].count(")")
            end += 1
        if note := comments.get(end) or comments.get(number):
            out[m.group(1)] = note
    return out


def _flags() -> dict[str, list[str]]:
    """Config key -> the CLI flags that set it (from ``CONFIG_FLAGS`` and the parser)."""
    from vivace.commands._io import CONFIG_FLAGS

    by_dest: dict[str, set[str]] = {}
    parser = _parser()
    parsers = [parser, *(sub for _, _, sub in walk(parser))]
    for p in parsers:
        for action in p._actions:
            for option in action.option_strings:
                if option.startswith("--"):
                    by_dest.setdefault(action.dest, set()).add(option)
    out: dict[str, list[str]] = {}
    for dest, key in CONFIG_FLAGS.items():
        out.setdefault(key, []).extend(sorted(by_dest.get(dest, ())))
    return out


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return ""
    if isinstance(value, Path):  # the home default: shown as written, not as this machine's path
        home = Path("~").expanduser()
        value = "~/" + str(value.relative_to(home)) if value.is_relative_to(home) else str(value)
    return "`none`" if value is None else f"`{value!r}`" if not isinstance(value, str) else f'`"{value}"`'


def _type_name(hint: Any) -> str:
    text = getattr(hint, "__name__", None) if not getattr(hint, "__args__", None) else None
    text = text or str(hint).replace("typing.", "").replace("pathlib.", "")
    return text.replace("NoneType", "None")


def config_fields() -> list[dict[str, Any]]:
    from typing import get_type_hints

    import vivace.config as config

    hints = get_type_hints(config.Config)
    comments = _field_comments(Path(config.__file__))
    flags = _flags()
    rows = []
    for f in dataclasses.fields(config.Config):
        meta = f.metadata
        allowed = []
        if meta.get("choices"):
            allowed.append(" \\| ".join(f"`{c}`" for c in meta["choices"]))
        if meta.get("min") is not None:
            allowed.append(f"≥ {meta['min']}")
        if meta.get("above") is not None:
            allowed.append(f"> {meta['above']}")
        if meta.get("max") is not None:
            allowed.append(f"≤ {meta['max']}")
        if meta.get("url"):
            allowed.append("http(s) URLs")
        table_only = f.name in ("models", "mcp")
        rows.append({
            "name": f.name,
            "type": _type_name(hints[f.name]),
            "default": _default(f),
            "allowed": ", ".join(allowed),
            "env": "TOML only" if table_only else f"`VIVACE_{f.name.upper()}`",
            "flags": ", ".join(f"`{x}`" for x in flags.get(f.name, [])),
            "note": comments.get(f.name, ""),
        })
    return rows


def config_reference() -> str:
    lines = ["| key | type | default | allowed | environment, flag | note |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in config_fields():
        where = "<br>".join(x for x in (r["env"], r["flags"]) if x)
        lines.append(f"| `{r['name']}` | `{r['type']}` | {r['default']} | {r['allowed']} | {where} | {_cell(r['note'])} |")
    from vivace.config import MCP_KEYS, MODEL_KEYS

    lines += ["", "A `[models.NAME]` table may set " + ", ".join(f"`{k}`" for k in MODEL_KEYS) + "; the other keys stay "
              "process-wide.", "", "An `[mcp.NAME]` table may set " + ", ".join(f"`{k}`" for k in MCP_KEYS) + "."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the hook


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def replace(m: re.Match[str]) -> str:
        kind, args = m.group(1), tuple(m.group(2).split())
        if kind == "config":
            return config_reference()
        if kind == "changelog":  # the repository's CHANGELOG.md, whose links start at the repository's root
            return (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").replace("](docs/", "](")
        return cli_command(args) if args else cli_reference()

    return MARKER.sub(replace, markdown)
