"""A CLI command plug-in for tests/test_cli.py: one that registers, one that breaks while registering."""

from __future__ import annotations

from typing import Any


def register(sub: Any, parents: Any) -> None:
    p = sub.add_parser("hello", parents=[parents.common], help="a plug-in's command")
    p.add_argument("--name", default="world")
    p.set_defaults(handler=lambda args, config: 0)


def broken(sub: Any, parents: Any) -> None:
    raise RuntimeError("registration fails on purpose")
