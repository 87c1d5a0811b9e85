"""A run's options: one frozen, validated type instead of a dict read by key in eight modules.

Why a type: a misspelt key (``{"max_branch": 3}``, ``ask(max_point=4)``) used to
be ignored without a word. ``RunOptions.parse`` rejects it in one line that
names the close match, before any model call, and every reader gets an
attribute with a type instead of ``options.get("...")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vivace.choices import Execution, LongForm, Mode, ToolMode, values
from vivace.errors import InputError, unknown_key


class RunOptions(BaseModel):
    """Per-run knobs. ``None`` means "the config's (or the step's) setting"; a set value replaces it for this run."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    # Every call of the run: the cap on its tokens, its default sampling, the model a call that names none goes to.
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)
    # Pipelines: every fan-out's and loop's bound, how the graph runs, SoT inside the writer.
    max_branches: int | None = Field(None, ge=1)
    max_rounds: int | None = Field(None, ge=0)
    execution: Execution | None = None
    long_form: LongForm | None = None
    # The SoT controller (vivace.agents.sot.options.SotOptions reads these beside the config).
    mode: Mode | None = None
    max_points: int | None = Field(None, ge=1)
    min_points: int | None = Field(None, ge=1)
    point_max_tokens: int | None = Field(None, ge=1)
    skeleton_max_tokens: int | None = Field(None, ge=1)
    branch_timeout_s: float | None = Field(None, gt=0)
    fail_on_branch_error: bool = False
    pipelined: bool | None = None
    load_aware: bool | None = None
    length_plan: bool | None = None
    safety_guard: bool | None = None
    guarded: tuple[str, ...] | None = None
    # The tools agent (vivace.agents.tools_agent).
    tool_mode: ToolMode | None = None
    tool_cache: bool = True
    stream_dispatch: bool = True
    max_replans: int = Field(1, ge=0)
    # What vivace serve hands the run: the request's chat settings and the turns before its last message.
    chat: dict[str, Any] | None = None
    messages: tuple[dict[str, Any], ...] = ()
    # A plug-in agent's own knobs, which vivace does not read or check.
    plugin: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def parse(cls, value: "RunOptions | Mapping[str, Any] | None" = None, **more: Any) -> "RunOptions":
        """The options from a mapping (``None`` values dropped) or as given; a bad key or value is an ``InputError``."""
        if isinstance(value, RunOptions) and not more:
            return value
        given = dict(value.as_dict() if isinstance(value, RunOptions) else (value or {}))
        given.update(more)
        given = {k: v for k, v in given.items() if v is not None}
        unknown = sorted(set(given) - set(cls.model_fields))
        if unknown:
            raise InputError(unknown_key(unknown[0], cls.model_fields, "run option"))
        try:
            return cls(**given)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            if err["type"] == "enum":  # a choice: the same line the config and the CLI give for one
                choices = next(a for a in get_args(cls.model_fields[where].annotation) if issubclass(a, Enum))
                raise InputError(f"{where} must be one of {', '.join(values(choices))}, got {err.get('input')!r}") from None
            raise InputError(f"run option {where}: {err['msg']}, got {err.get('input')!r}") from None

    def replace(self, **changes: Any) -> "RunOptions":
        """A validated copy with ``changes`` on top (``None`` resets a key to its default)."""
        return RunOptions.parse({**self.as_dict(), **changes})

    def as_dict(self) -> dict[str, Any]:
        """Only what was set: what a checkpoint's header stores, and what ``parse`` reads back."""
        return self.model_dump(exclude_defaults=True, mode="json")
