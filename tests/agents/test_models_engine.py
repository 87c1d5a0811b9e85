"""The example pipeline on the real engine in two configurations of the same weights: bf16 and W8A8 int8.

The session's engine is the ``default`` model; the example's ``int8`` model
(the W8A8 checkpoint of the same weights) starts in-process as a second engine
on its first call. This is the one test that starts a second engine
configuration. No timing thresholds: only properties of the trace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from vivace.agents.driver import run as run_target
from vivace.agents.driver import run_record
from vivace.assembly import runtime_for
from vivace.config import load_config

pytestmark = pytest.mark.engine

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "two_models"


def test_two_configurations_of_the_same_weights(engine: Any, model_dir: Path, vivace_home: Path,
                                                run: Callable[..., Any]) -> None:
    from vivace_bench.quant_checkpoint import checkpoint_for

    int8_dir = checkpoint_for("w8a8", "auto", model_dir, vivace_home)  # what `bench quant` writes; reused when there
    config = load_config(EXAMPLE / "vivace.toml", {"home": str(vivace_home)}, environ={})
    runtime = runtime_for(config, engine, save_runs=False)
    try:
        trace = run(run_target(str(EXAMPLE / "pipeline.toml"), "Compare tea and coffee.", runtime,
                               options={"max_branches": 2, "max_tokens": 48}))
    finally:
        second = runtime.models.opened.get("int8")
        if second is not None:  # the session's engine (default) stays up for the other tests
            run(second.aclose())
    record = run_record(trace)
    assert record["status"] == "done" and record["answer"].strip()
    by_agent = {(c["agent"], c["model"], c["served_by"]) for c in record["calls"]}
    assert by_agent == {("planner", "default", "vllm:smollm2-135m"), ("researcher", "int8", "vllm:smollm2-135m-w8a8"),
                        ("writer", "default", "vllm:smollm2-135m")}
    assert all(c["output_tokens"] > 0 for c in record["calls"])
    assert all(c["output_tokens"] <= 48 for c in record["calls"])  # the run's cap bounds the steps' own (96, 192)
    models = {m["name"]: m for m in record["models"]}
    assert models["int8"]["weights"] == str(int8_dir) and models["default"]["weights"] == str(model_dir)
    assert models["int8"]["quantization"] == "compressed-tensors" and models["default"]["quantization"] is None
    calls = {a: sum(c["agent"] == a for c in record["calls"]) for a in ("planner", "researcher", "writer")}
    # Two researchers: the plan's two items (a one-item plan is continued, a second planner call).
    assert calls["researcher"] == 2 and calls["planner"] in (1, 2) and calls["writer"] == 1
    assert models["int8"]["agents"] == ["researcher"] and models["int8"]["calls"] == 2
    assert models["default"]["calls"] == calls["planner"] + 1 and models["default"]["agents"] == ["planner", "writer"]
    for m in models.values():
        mine = [c for c in record["calls"] if c["model"] == m["name"]]
        assert m["output_tokens"] == sum(c["output_tokens"] for c in mine)
        assert m["queue_s"] == round(sum(c["queue_s"] for c in mine), 6) and m["call_s"] > 0
