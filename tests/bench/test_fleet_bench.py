"""`vivace bench fleet` on two real vLLM servers it starts itself on loopback, one of which it kills.

The same run also routes every question through vLLM's own router (the real
``vllm-router`` binary, two policies) in front of those servers, so one server
start serves the comparison.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROUTED = ("vllm-router:cache_aware", "vllm-router:round_robin")


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as s:
        return s.connect_ex((parts.hostname or "", parts.port or 0)) == 0



@pytest.mark.engine
def test_fleet_bench_measures_every_arm_and_survives_a_killed_server(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vivace.cli import main

    out = tmp_path / "out"
    rc = main([
        "bench", "fleet", "--model", str(model_dir), "--home", str(tmp_path / "home"), "--limit", "1",
        "--max-tokens", "64", "--max-points", "3", "--failover-runs", "2", "--out", str(out), "--json",
        "--vllm-router", "cache_aware", "round_robin",
    ])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert len(report["servers"]) == 2 and all(u.startswith("http://127.0.0.1:") for u in report["servers"])
    assert report["cache_reset_per_run"] is True  # the servers it starts have vLLM's cache reset
    assert report["config"]["arms"] == ["affinity", "spread", *ROUTED]
    (row,) = report["questions"]
    for arm in ("affinity", "spread", *ROUTED):
        run = row[arm]
        assert run["calls"] >= 3 and run["unfinished_calls"] == 0 and run["answer"].strip()
        assert 0 < run["prompt_tokens"] and 0 <= run["cached_tokens"] < run["prompt_tokens"]
        assert sum(run["calls_per_server"].values()) == run["calls"]
    assert row["spread"]["servers_used"] == 2  # least-outstanding spreads a run's points
    # Cold caches per run: the affinity arm computes the points' shared prefix once, spreading once per server.
    assert row["affinity"]["cached_tokens"] >= row["spread"]["cached_tokens"]
    assert 0.0 <= row["answer_similarity"] <= 1.0
    summary = report["summary"]
    assert summary["affinity"]["runs"] == summary["spread"]["runs"] == 1
    assert summary["speedup_affinity_median"] == pytest.approx(
        row["spread"]["latency_s"] / row["affinity"]["latency_s"], abs=1e-3)
    # vLLM's router, in front of the same two servers, same questions and budget.
    for arm in ROUTED:
        record, figures = report["vllm_router"][arm], summary[arm]
        assert record["policy"] == arm.split(":")[1] and record["workers_render_prompts"] is True
        assert figures["runs"] == 1 and figures["calls"] == row[arm]["calls"] and figures["output_tokens"] > 0
        assert 0 < figures["latency_median_s"] <= figures["latency_p95_s"] and figures["output_tok_s"] > 0
        assert summary["versus_affinity"][arm]["latency_ratio_median"] == pytest.approx(
            row[arm]["latency_s"] / row["affinity"]["latency_s"], abs=1e-3)
        assert 0.0 <= summary["versus_affinity"][arm]["answer_similarity_median"] <= 1.0
        # the router's own count of where it sent each call is the per-server split
        assert {u: int(record["per_worker"].get(u, 0)) for u in report["servers"]} == row[arm]["calls_per_server"]
        assert not _listening(record["url"])  # the router was stopped with the bench
    assert row["vllm-router:round_robin"]["servers_used"] == 2  # three calls or more alternate
    # The servers give it prompt tokens (--enable-scale-out), so cache-aware routing matched prefixes.
    decisions = report["vllm_router"]["vllm-router:cache_aware"]["prefix_decisions"]
    assert "missing_tokens" not in decisions and decisions.get("prefix_hit", 0) >= 1
    failover = report["failover"]
    assert failover["killed"] in report["servers"]  # killed while the points streamed
    assert failover["runs_ok"] == failover["runs"] == 2 and failover["runs_failed"] == 0
    assert failover["unfinished_calls"] == 0 and not failover["errors"]
    assert [a["id"] for a in failover["answers"]] == [row["id"]] * 2  # one question, run twice at once
    assert all(a["answer"] and a["answer"].strip() for a in failover["answers"])
    assert failover["unfailed_wall_s"] > 0 and 0.0 <= failover["answer_similarity_to_unfailed_median"] <= 1.0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["summary"] == summary


def test_fleet_bench_refuses_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vivace.cli import main

    for args, message in (
        (["--base-url", "http://127.0.0.1:9"], "at least two --base-url"),
        (["--servers", "1"], "--servers must be between 2 and 8"),
        (["--failover-runs", "-1"], "--failover-runs at least 0"),
        (["--vllm-router", "kv_aware"], "--vllm-router policies are cache_aware, round_robin"),
    ):
        rc = main(["bench", "fleet", *args, "--home", str(tmp_path), "--out", str(tmp_path / "o")])
        assert rc == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "o" / "report.json").exists()
