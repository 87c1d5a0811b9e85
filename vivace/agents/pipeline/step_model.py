"""A step's model and sampling, checked for a whole pipeline (nested ones too) before a run.

Why its own module: a step names one of the runtime's models (``model =
"int8"``) and its sampling (``sampling = { temperature = 0.2, max_tokens =
128 }``) in code or in a pipeline file. The run driver checks every step's
before any model call, so an unknown name is one line, not a failure halfway
through a run. The checks of one value and the precedence of a call's
settings are ``vivace.agents.sampling``'s (re-exported here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from vivace.agents.pipeline.spec import Pipeline
from vivace.agents.registry import REGISTRY
from vivace.agents.sampling import SAMPLING_KEYS as SAMPLING_KEYS
from vivace.agents.sampling import Sampling as Sampling
from vivace.agents.sampling import call_sampling as call_sampling
from vivace.agents.sampling import check_model as check_model
from vivace.agents.sampling import check_sampling as check_sampling
from vivace.agents.sampling import step_settings as step_settings
from vivace.errors import InputError

if TYPE_CHECKING:
    from vivace.agents.base import Agent
    from vivace.runtime.model_set import ModelSet


def _steps(agent: "Agent") -> Iterator[tuple[str, Any]]:
    """Every step of a pipeline, nested pipelines' steps included, with where it is for error messages."""
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
