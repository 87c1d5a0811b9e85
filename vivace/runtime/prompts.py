"""The one prompt loader: templates are package data files, ``<package>/prompts/<name>.txt``.

A chat template is a chat written as sections headed ``[system]``, ``[user]`` or
``[assistant]``. Fields are ``str.format`` names (``{question}``). A final
``[assistant]`` section is not a turn but the prefill the model continues,
so a template fully describes one call's prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from vivace.errors import InputError
from vivace.runtime.backend import Message

_SECTION = re.compile(r"^\[(system|user|assistant)\]\s*$", re.MULTILINE)


@dataclass(frozen=True)
class ChatTemplate:
    """A parsed template: ordered (role, text) turns and an optional prefill."""

    name: str
    turns: tuple[tuple[str, str], ...]
    prefill: str | None

    def render(self, **values: object) -> tuple[list[Message], str | None]:
        """The messages and prefill with ``values`` filled in."""
        try:
            messages = [{"role": role, "content": text.format(**values)} for role, text in self.turns]
            prefill = self.prefill.format(**values) if self.prefill is not None else None
        except KeyError as exc:
            raise InputError(f"prompt {self.name!r} needs a value for {exc}") from None
        return messages, prefill


def parse_template(name: str, text: str) -> ChatTemplate:
    """Split a template file into turns; a trailing assistant section becomes the prefill."""
    marks = list(_SECTION.finditer(text))
    if not marks:
        raise InputError(f"prompt {name!r} has no [system]/[user]/[assistant] section")
    turns: list[tuple[str, str]] = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        turns.append((mark.group(1), text[mark.end() : end].strip("\n")))
    prefill: str | None = None
    if turns[-1][0] == "assistant":
        prefill = turns.pop()[1]
    if not turns or turns[-1][0] != "user":
        raise InputError(f"prompt {name!r} must end with a [user] turn (and an optional prefill)")
    return ChatTemplate(name=name, turns=tuple(turns), prefill=prefill)


@lru_cache(maxsize=None)
def load_text(name: str, package: str = "vivace.agents") -> str:
    """The file ``<package>/prompts/<name>.txt``, read once per process (plug-ins pass their own package)."""
    try:
        return resources.files(package).joinpath("prompts", f"{name}.txt").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        raise InputError(f"no prompt template {name!r} in package {package!r}") from None


@lru_cache(maxsize=None)
def load_template(name: str, package: str = "vivace.agents") -> ChatTemplate:
    """The chat template ``<package>/prompts/<name>.txt``, parsed once per process."""
    return parse_template(name, load_text(name, package))


def render(name: str, package: str = "vivace.agents", **values: object) -> tuple[list[Message], str | None]:
    """Load and fill the chat template ``name``: the messages and the prefill."""
    return load_template(name, package).render(**values)
