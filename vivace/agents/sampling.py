"""A step's model and sampling values: checked, and resolved for each of the step's calls.

Why its own module, below the agents' core: ``AgentContext.call`` resolves
every call's sampling here, and the pipeline file's parser checks a step's
``model`` and ``sampling`` here, so neither needs the pipeline; the checks of
a whole pipeline before a run (``vivace.agents.pipeline.step_model``) build on it. The
precedence, highest first:

1. the agent's own argument to ``ctx.call`` (``temperature=``, ``model=``...);
2. the step's ``sampling`` and ``model`` (an inner step of a nested pipeline
   inherits the enclosing step's, and overrides them key by key);
3. the run's options (``vivace run --default-model``, a ``vivace serve``
   client's ``temperature``);
4. the config (``temperature``, ``repetition_penalty``, ``max_tokens``; the
   ``default`` model).

``max_tokens`` is a cap rather than a default: a call gets the smallest of
the agent's own cap, the step's (else the config's) and the run's option.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping

from vivace.errors import InputError, unknown_key

if TYPE_CHECKING:
    from vivace.agents.base import StepRun
    from vivace.agents.options import RunOptions

# key -> (int or float, lowest allowed, whether the lowest is excluded, highest allowed)
SAMPLING_KEYS: dict[str, tuple[type, float, bool, float | None]] = {
    "max_tokens": (int, 1, False, None),
    "temperature": (float, 0.0, False, None),
    "top_p": (float, 0.0, True, 1.0),
    "repetition_penalty": (float, 0.0, True, None),
    "seed": (int, 0, False, None),
}


@dataclass(frozen=True)
class Sampling:
    """A step's sampling defaults, checked once when the step is made: what its calls get unless the agent
    passes its own. ``None`` leaves a value to the run's options and the config."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Only what is set: the record's and the checkpoint header's form, as a pipeline file writes it."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def check_model(value: Any, where: str) -> str | None:
    """A step's ``model``: None, or a non-empty name (whether the runtime has it is checked at run time)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: model must be a model name (default or a [models.NAME] of the config), "
                         f"got {value!r}")
    return value.strip()


def check_sampling(value: Any, where: str) -> Sampling:
    """A step's ``sampling`` table as a ``Sampling``, every value of the right type and range, or one
    ``InputError`` naming it."""
    if isinstance(value, Sampling):
        return value
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: sampling must be a table (sampling = {{ temperature = 0.2, max_tokens = 128 }}), "
                         f"got {value!r}")
    if unknown := sorted(set(value) - set(SAMPLING_KEYS)):
        raise InputError(f"{where}: sampling: {unknown_key(unknown[0], SAMPLING_KEYS)}")
    out: dict[str, Any] = {}
    for key, raw in value.items():
        kind, low, above, high = SAMPLING_KEYS[key]
        number = isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw)
        if kind is int and number and float(raw).is_integer():
            raw = int(raw)
        elif kind is int or not number:
            expected = "a whole number" if kind is int else "a number"
            raise InputError(f"{where}: sampling.{key} must be {expected}, got {raw!r}")
        if raw < low or (above and raw == low) or (high is not None and raw > high):
            bound = f"greater than {low:g}" if above else f"at least {low:g}"
            raise InputError(f"{where}: sampling.{key} must be {bound}" + (f" and at most {high:g}" if high else "")
                             + f", got {raw!r}")
        out[key] = kind(raw)
    return Sampling(**out)


def step_settings(run: "StepRun | None", runs: list["StepRun"]) -> tuple[str | None, dict[str, Any]]:
    """The model and sampling of ``run``'s step, with what it inherits from the steps that enclose it."""
    by_id = {r.id: r for r in runs}
    chain = []
    while run is not None:
        chain.append(run)
        run = by_id.get(run.parent) if run.parent is not None else None
    model: str | None = None
    sampling: dict[str, Any] = {}
    for outer in reversed(chain):  # outermost first: inner steps override key by key
        model = getattr(outer, "model", None) or model
        sampling.update(getattr(outer, "sampling", None) or {})
    return model, sampling


def call_sampling(step: Mapping[str, Any], options: "RunOptions", config_max_tokens: int, *,
                  max_tokens: int | None, temperature: float | None,
                  repetition_penalty: float | None) -> dict[str, Any]:
    """The sampling fields of one ``Call`` from the agent's arguments, the step's, the run's and the config's."""
    caps = [int(c) for c in (options.max_tokens, step.get("max_tokens")) if c]
    cap = min(caps) if caps else int(config_max_tokens)
    return {
        "max_tokens": min(max_tokens, cap) if max_tokens else cap,
        "temperature": temperature if temperature is not None else step.get("temperature", options.temperature),
        "repetition_penalty": repetition_penalty if repetition_penalty is not None else step.get("repetition_penalty"),
        "top_p": step.get("top_p"),
        "seed": step.get("seed"),
    }
