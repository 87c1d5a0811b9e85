"""`vivace models prepare|list`: the embedded model's conversion, what is on disk, and the config's named models.

Neither calls a model, so only the common flags and ``--json`` apply
(``prepare`` always converts the embedded model; ``--home`` says where).
"""

from __future__ import annotations

import argparse
import logging

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    models = sub.add_parser("models", help="prepare and list models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    prep = msub.add_parser("prepare", parents=[parents.common, parents.json], help="convert the embedded GGUF into a model folder")
    prep.add_argument("--force", action="store_true", help="convert again even if prepared")
    prep.set_defaults(handler=cmd_prepare)
    lst = msub.add_parser("list", parents=[parents.common, parents.json], help="known models and where they are")
    lst.set_defaults(handler=cmd_list)


def cmd_prepare(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console

    from vivace.runtime import models

    console = Console(stderr=True)
    with console.status("preparing the embedded model (first time only, about a minute)..."):
        path = models.prepare(models.EMBEDDED, config.home, force=args.force)
    if args.json:
        emit_json({"model": models.EMBEDDED.name, "path": str(path), "missing": models.missing_parts(path)})
    else:
        Console().print(f"{models.EMBEDDED.name}: ready at {path}")
    return 0


def cmd_list(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console
    from rich.table import Table

    from vivace.runtime import models

    rows = models.list_models(config.home)
    configured = [configured_row(config, name) for name in config.model_names]
    if args.json:
        emit_json({"models": rows, "configured": configured})
        return 0
    table = Table(title=f"models under {models.models_dir(config.home)}")
    for column in ("name", "status", "path", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["status"], row["path"], row["description"])
    Console().print(table)
    named = Table(title="models the config names (a step's model = NAME)")
    for column in ("name", "backend", "model", "settings"):
        named.add_column(column, overflow="fold")
    for row in configured:
        named.add_row(row["name"], row["backend"], row["model"], row["settings"])
    Console().print(named)
    return 0


def configured_row(config: Config, name: str) -> dict[str, str]:
    """One named model as the config serves it: what its table sets on top of the top-level keys."""
    served = config.for_model(name)
    model = ", ".join(served.base_urls) if served.backend == "openai" else served.model
    own = config.models.get(name, {})
    settings = ", ".join(f"{k}={v}" for k, v in own.items() if k not in ("backend", "model")) or "the top-level keys"
    return {"name": name, "backend": served.backend, "model": model, "settings": settings}
