"""Pipelines: the spec, its state, the TOML file, a model per step, and the executors.

``spec`` holds ``Pipeline``, ``Step`` and ``Loop`` (re-exported by
``vivace.agents``); ``file`` reads a pipeline file; ``state`` is the graph
state; ``step_model`` checks each step's model, sampling and tools before a
run; ``step_node`` runs one step, and ``dataflow`` (the default) and
``supersteps`` (LangGraph's) are the executors. Nothing is imported here, so
importing one module does not load the others.
"""
