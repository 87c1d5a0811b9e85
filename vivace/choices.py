"""Every closed set of spellings vivace accepts, each defined once as a ``StrEnum``.

A setting's choices are written here and nowhere else: the config's checks
(``vivace.config``), the CLI's ``choices=``, the server's request models, the
TUI's option cycles and the agents that act on a value all import them. A
member is its string (``Mode.SOT == "sot"``), so TOML, JSON and flags spell
them as before. This module imports nothing of vivace: every layer may use it.

Membership of a plain string: ``value in values(Mode)`` (``"sot" in Mode``
raises ``TypeError`` before Python 3.12).
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """How the sot agent answers: the router's choice, Skeleton-of-Thought, or one plain answer."""

    AUTO = "auto"
    SOT = "sot"
    NORMAL = "normal"


class LongForm(StrEnum):
    """SoT inside agents (the writer): never, when the router says so, or always."""

    OFF = "off"
    AUTO = "auto"
    SOT = "sot"


class Compression(StrEnum):
    """When retrieved context is compressed: never, when the cost model says it pays, or always."""

    OFF = "off"
    AUTO = "auto"
    ALWAYS = "always"


class CompressionMethod(StrEnum):
    """How context is compressed: chosen by the cost model, coarse (sentences kept), fine (tokens dropped), or both."""

    AUTO = "auto"
    COARSE = "coarse"
    FINE = "fine"
    COARSE_FINE = "coarse+fine"


class Scheduling(StrEnum):
    """The order calls take the engine's slots in (``vivace.runtime.priority``)."""

    FCFS = "fcfs"
    CRITICAL = "critical"
    FAIR = "fair"
    PROGRAM = "program"
    AGE = "age"


class Execution(StrEnum):
    """How a pipeline runs its steps: as their inputs are ready, or in lock-step supersteps."""

    DATAFLOW = "dataflow"
    SUPERSTEPS = "supersteps"


class Backend(StrEnum):
    VLLM = "vllm"
    OPENAI = "openai"
    FAKE = "fake"


class Dtype(StrEnum):
    AUTO = "auto"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class KVCacheDtype(StrEnum):
    AUTO = "auto"
    FP8 = "fp8"
    FP8_E4M3 = "fp8_e4m3"
    FP8_E5M2 = "fp8_e5m2"


class Dialect(StrEnum):
    """What OpenAI-compatible servers accept: probed, vLLM's vendor fields, or the standard fields only."""

    AUTO = "auto"
    VLLM = "vllm"
    STRICT = "strict"


class ToolMode(StrEnum):
    """How the tools agent works: chosen per task, plan then run, or ReAct."""

    AUTO = "auto"
    PLAN = "plan"
    REACT = "react"


class ToolChoiceMode(StrEnum):
    """OpenAI's ``tool_choice`` words (a named function is the other form)."""

    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"


class Approve(StrEnum):
    """Tool calls that need approval: ask on the terminal, approve all, or refuse all."""

    ASK = "ask"
    ALL = "all"
    NONE = "none"


def values(kind: type[StrEnum]) -> tuple[str, ...]:
    """The spellings of ``kind`` as plain strings, in order: for ``choices=``, messages and membership."""
    return tuple(member.value for member in kind)
