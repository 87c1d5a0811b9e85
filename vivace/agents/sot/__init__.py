"""Skeleton-of-Thought: the controller and its stages, the points, the router and the one route decision.

``controller`` is the ``sot`` agent (skeleton, then points in parallel, then
the join); ``calls``, ``points``, ``skeleton`` and ``length_plan`` are its
stages; ``router`` (with ``router_cues`` and ``router_examples.tsv``) picks a
mode per question; ``route`` is the one decision the controller and a
writer's long-form answer (``long_form``) share. Nothing is imported here, so
``vivace.agents.sot.router`` stays quick to import for the CLI.
"""
