"""The multi-agent workloads ``bench pipeline`` runs: research with fan-out, map-reduce, a revision loop.

Why these three: they are the shapes whose efficiency a framework decides,
not the model: a fan-out whose branches the engine can batch (research), a
map over documents of uneven length with a chain per document and a reduce
(map-reduce, where supersteps make every chain wait for the slowest), and a
sequential writer/critic loop (where only the calls themselves can get
faster). The agents and prompts are vivace's built-ins, the same in every
configuration; only the execution, scheduling and SoT decisions change.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import cast

from vivace.agents.builtin import research_pipeline
from vivace.agents.pipeline.spec import Loop, Pipeline, Step

DOCS = "data/pipeline_docs"
# The agents whose answer is the long-form text SoT may expand; under a step model they stay on the default model,
# as a small model takes the short steps and the large one the answer (vivace_bench.pipeline_bench's `models`).
LONG_FORM_AGENTS = frozenset({"writer", "answer"})


@dataclass
class Workload:
    name: str
    pipeline: Pipeline
    tasks: list[str]
    _on_model: dict[str, Pipeline] = field(default_factory=dict, repr=False)

    def on_step_model(self, model: str | None) -> Pipeline:
        """The pipeline with every step but the long-form writers on ``model`` (None: unchanged)."""
        if model is None:
            return self.pipeline
        if model not in self._on_model:
            p = self.pipeline
            steps = [replace(s, model=None if s.agent in LONG_FORM_AGENTS else model) for s in p.step_list]
            edges = cast(list[tuple[str, str]], p.edges)  # Pipeline keeps its (from, to) pairs as tuple[str, ...]
            self._on_model[model] = Pipeline(p.name, steps, edges, p.loops, p.output, p.description)
        return self._on_model[model]


def docs_folder() -> Path:
    return Path(str(resources.files("vivace_bench").joinpath(DOCS)))


def mapreduce_pipeline(folder: Path | str) -> Pipeline:
    """documents -> summarize each (fan-out) -> facts of each (per item) -> one combined answer."""
    return Pipeline(
        "mapreduce",
        [Step("split", "documents", params={"folder": str(folder)}),
         Step("summarize", "summarizer", fan_out=True),
         Step("facts", "extractor", per_item=True),
         Step("combine", "writer")],
        edges=[("split", "summarize"), ("summarize", "facts"), ("facts", "combine")],
        output="combine",
        description="summarize each document, extract its facts, combine",
    )


def revision_pipeline(max_rounds: int = 2) -> Pipeline:
    """writer -> critic, back to the writer while the critic asks, at most ``max_rounds`` times."""
    return Pipeline(
        "revise",
        [Step("write", "answer"), Step("review", "critic")],
        edges=[("write", "review")],
        loops=[Loop("review", "write", when="revise", max_rounds=max_rounds)],
        output="write",
        description=f"writer -> critic (at most {max_rounds} revisions)",
    )


def workloads() -> list[Workload]:
    return [
        Workload("research", research_pipeline(max_branches=3, max_rounds=1), [
            "Compare trains and buses for commuting in a mid-sized city.",
            "What should a small bakery consider before opening a second shop?",
            "Explain the main ways households can cut their heating costs.",
        ]),
        Workload("mapreduce", mapreduce_pipeline(docs_folder()), [
            "How should Harwick improve commuting over the next five years?",
            "What are the costs and benefits of each transport option in Harwick?",
        ]),
        Workload("revise", revision_pipeline(), [
            "Write a short note to residents explaining why a new bus lane is being built.",
            "Describe how a heat pump works for someone choosing a heating system.",
            "Explain to a new employee how to plan a week of work.",
        ]),
    ]

