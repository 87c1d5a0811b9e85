"""A step's model and sampling: checked before a run, resolved for each of the step's calls.

Why its own module: a step names one of the runtime's models (``model =
"int8"``) and its sampling (``sampling = { temperature = 0.2, max_tokens =
128 }``) in code or in a pipeline file. The file parser, the run driver and
``AgentContext.call`` must agree on what is allowed, what an unknown name
says (before any model call), and which setting wins. The precedence, highest
first:

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
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from vivace.errors import InputError

if TYPE_CHECKING:
    from vivace.agents.base import Agent, StepRun
    from vivace.agents.options import RunOptions
    from vivace.runtime.model_set import ModelSet

# key -> (int or float, lowest allowed, whether the lowest is excluded, highest allowed)
SAMPLING_KEYS: dict[str, tuple[type, float, bool, float | None]] = {
    "max_tokens": (int, 1, False, None),
    "temperature": (float, 0.0, False, None),
    "top_p": (float, 0.0, True, 1.0),
    "repetition_penalty": (float, 0.0, True, None),
    "seed": (int, 0, False, None),
}


def check_model(value: Any, where: str) -> str | None:
    """A step's ``model``: None, or a non-empty name (whether the runtime has it is checked at run time)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: model must be a model name (default or a [models.NAME] of the config), "
                         f"got {value!r}")
    return value.strip()


def check_sampling(value: Any, where: str) -> dict[str, Any]:
    """A step's ``sampling`` table, every value of the right type and range, or one ``InputError`` naming it."""
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: sampling must be a table (sampling = {{ temperature = 0.2, max_tokens = 128 }}), "
                         f"got {value!r}")
    if unknown := sorted(set(value) - set(SAMPLING_KEYS)):
        raise InputError(f"{where}: sampling: unknown key(s) {', '.join(unknown)}; expected {', '.join(SAMPLING_KEYS)}")
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
    return out


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


def _steps(agent: "Agent") -> Iterator[tuple[str, Any]]:
    """Every step of a pipeline, nested pipelines' steps included, with where it is for error messages."""
    from vivace.agents.pipeline import Pipeline
    from vivace.agents.registry import REGISTRY

    seen: set[int] = set()
    todo = [agent] if isinstance(agent, Pipeline) else []
    while todo:
        pipe = todo.pop()
        if id(pipe) in seen:
            continue
        seen.add(id(pipe))
        for step in pipe.step_list:
            yield f"pipeline {pipe.name!r}, step {step.name!r}", step
            try:
                inner = step.impl or REGISTRY.get(step.agent)
            except InputError:
                continue  # the pipeline's own validation names an unknown agent
            if isinstance(inner, Pipeline):
                todo.append(inner)


def models_named(agent: "Agent", run_model: str | None = None) -> list[str]:
    """The models a run of ``agent`` names (the default first): the ones worth starting before its clock."""
    names = ["default", *([run_model] if run_model else [])]
    names += [step.model for _, step in _steps(agent) if getattr(step, "model", None)]
    return list(dict.fromkeys(names))


def check_tools(agent: "Agent", box: Any) -> None:
    """Every tool a pipeline's steps (nested ones too) name is one of the runtime's, before any model call."""
    for where, step in _steps(agent):
        for name in getattr(step, "tools", ()) or ():
            if name not in box:
                raise InputError(f"{where}: unknown tool {name!r}; tools: {', '.join(box.names()) or 'none'}")


def check_models(agent: "Agent", models: "ModelSet | list[str]", run_model: str | None = None) -> None:
    """Every model a pipeline's steps (nested ones too) or the run names exists, before any model call."""
    names = list(models.names if not isinstance(models, list) else models)

    def known(name: str, where: str) -> None:
        if name not in names:
            raise InputError(f"{where}: unknown model {name!r}; models: {', '.join(names)} "
                             "(add a [models.NAME] table to the config)")

    if run_model is not None:
        known(run_model, "the run's default model")
    for where, step in _steps(agent):
        if (name := check_model(getattr(step, "model", None), where)) is not None:
            known(name, where)
        check_sampling(getattr(step, "sampling", None) or {}, where)
