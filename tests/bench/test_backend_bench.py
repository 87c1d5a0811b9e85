"""`vivace bench backend`: run_bench on the session's real vLLM engine, and the command end to end on the fake.

No timed assertions: the figures are checked against each other and against the
fixed output length that ``ignore_eos`` gives, not against thresholds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from vivace_bench import backend_bench


@pytest.mark.engine
def test_run_bench_on_the_real_engine(engine: Any, run: Callable[..., Any], tmp_path: Path) -> None:
    tokens = 8
    report = run(backend_bench.run_bench(engine, [1, 2], tokens, 1))
    assert report["bench"] == "backend" and report["backend"] == "vllm" and report["model"] == engine.model
    rows = report["levels"]
    assert [r["concurrency"] for r in rows] == [1, 2]
    for r in rows:
        assert r["repeats"] == 1 and r["tokens_per_request"] == tokens
        # ignore_eos: every request makes exactly ``tokens`` tokens, whatever the model would say.
        assert r["output_tokens"] == r["concurrency"] * tokens
        assert r["wall_s"] > 0 and r["tok_s"] == pytest.approx(r["output_tokens"] / r["wall_s"])
        assert r["tok_s_min"] == r["tok_s_max"] == r["tok_s"]  # one round: the median is that round
        assert 0 < r["ttft_median_s"] < r["wall_s"] and r["per_stream_decode_tok_s"] > 0
        assert r["speedup_vs_1"] == pytest.approx(r["tok_s"] / rows[0]["tok_s"])
    assert rows[0]["speedup_vs_1"] == 1.0
    assert report["single_stream_decode_tok_s"] == rows[0]["per_stream_decode_tok_s"]

    # `vivace report` shows these measured figures, not copies of the README's.
    from vivace_bench.report import write_report_pages

    run_dir = tmp_path / "runs" / "bench-backend"
    run_dir.mkdir(parents=True)
    (run_dir / "report.json").write_text(json.dumps(report))
    html, md, _ = write_report_pages([tmp_path / "runs"], tmp_path / "report.html")
    markdown, page = md.read_text(), html.read_text()
    for r in rows:
        line = (f"| {r['concurrency']} | {r['tok_s']:.1f} | {r['ttft_median_s']:.3f} | "
                f"{r['per_stream_decode_tok_s']:.1f} | {r['speedup_vs_1']:.2f} |")
        assert line in markdown, markdown
        assert f"{r['tok_s']:.1f}" in page
    assert f"vllm:{engine.model}" in markdown


def test_command_writes_the_report_on_the_fake_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command's parsing, limiter raise, report.json and --json output (the fake replies >= 4 words)."""
    from vivace.cli import main

    out = tmp_path / "out"
    rc = main([
        "bench", "backend", "--backend", "fake", "--concurrency", "1", "3", "--tokens", "4", "--repeats", "2",
        "--out", str(out), "--json", "--home", str(tmp_path / "home"),
    ])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads((out / "report.json").read_text())
    assert printed["levels"] == report["levels"] and report["backend"] == "fake"
    assert [r["concurrency"] for r in report["levels"]] == [1, 3]
    assert [r["output_tokens"] for r in report["levels"]] == [4, 12]
    assert all(r["repeats"] == 2 and r["tokens_per_request"] == 4 for r in report["levels"])
    assert int(report["config"]["max_in_flight"]) >= 3  # the limiter must not cap the level measured


def test_command_rejects_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vivace.cli import main

    rc = main(["bench", "backend", "--backend", "fake", "--tokens", "1", "--out", str(tmp_path / "o"), "--home", str(tmp_path)])
    assert rc != 0 and "--tokens >= 2" in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.json").exists()
