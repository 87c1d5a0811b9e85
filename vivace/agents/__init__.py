"""Agents, pipelines, the SoT controller and the run driver: this module only re-exports.

``run`` runs any agent or pipeline on a task and returns its ``RunTrace``;
``ask`` is ``run("sot", ...)`` for one question; ``@agent`` registers your own.
LangGraph is imported on first use, so the CLI and the router stay quick to import.
"""

from __future__ import annotations

from vivace.agents.base import Agent, AgentContext, Node, NodeResult, StepInput, StepRun, Tracer, current_step, task_text
from vivace.agents.driver import agent_summary, ask, critical_path, parallelism, resolve, run, run_record
from vivace.agents.events import (
    AgentDelta,
    AgentDone,
    AgentFailed,
    AgentStarted,
    AnswerDelta,
    AnswerDone,
    BranchDelta,
    BranchDone,
    ErrorEvent,
    Event,
    Routed,
    RunStarted,
    SkeletonDelta,
    SkeletonDone,
)
from vivace.agents.pipeline.spec import Loop, Pipeline, Step
from vivace.agents.registry import REGISTRY, agent, get_agent, list_agents
from vivace.agents.sot.router import MODES, route

__all__ = [
    "Agent", "AgentContext", "AgentDelta", "AgentDone", "AgentFailed", "AgentStarted", "AnswerDelta", "AnswerDone",
    "BranchDelta", "BranchDone", "ErrorEvent", "Event", "Loop", "MODES", "Node", "Pipeline", "REGISTRY", "Routed",
    "RunStarted", "SkeletonDelta", "SkeletonDone", "Step", "StepInput", "NodeResult", "StepRun", "Tracer", "agent",
    "agent_summary", "ask", "critical_path", "current_step", "get_agent", "list_agents", "parallelism", "resolve",
    "route", "run", "run_record", "task_text",
]
