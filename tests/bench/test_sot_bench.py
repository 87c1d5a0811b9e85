"""`vivace bench sot` on FakeBackend: question set, selection, report schema and its arithmetic.

FakeBackend stands in for orchestration only; nothing here judges generated
text or timing. The router is stubbed so the tests need no embedder.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from vivace.errors import InputError
from vivace_bench import sot_bench
from vivace.runtime.backend import GenerationRequest
from vivace.runtime.fake import FakeBackend

QUESTIONS = [
    {"id": "g1", "category": "generic", "question": "How do I keep houseplants alive?"},
    {"id": "k1", "category": "knowledge", "question": "Why is the sky blue?"},
    {"id": "c1", "category": "coding", "question": "Write a Python function that adds two numbers."},
]
LONG_NORMAL = " ".join(f"word{i}" for i in range(60))


def responder(request: GenerationRequest) -> str:
    if request.tag.endswith("/skeleton"):
        return " Water regularly\n2. Give light\n3. Repot yearly"
    if "/expand/" in request.tag:
        return "A sentence or two about this point with some detail."
    return LONG_NORMAL


@pytest.fixture()
def stub_router(monkeypatch: pytest.MonkeyPatch) -> None:
    import vivace.agents.sot.route as sot

    async def stub(q: str) -> tuple[str, str]:
        return ("normal", "stub: code") if "Python" in q else ("sot", "stub")

    monkeypatch.setattr(sot, "aroute", stub)  # the one route decision (vivace.agents.sot.route) awaits the router


def run(questions: list[dict[str, str]], max_tokens: int = 128, out: Path | None = None) -> dict[str, Any]:
    return asyncio.run(
        sot_bench.run_bench(
            FakeBackend(responder), questions, max_tokens=max_tokens, repetition_penalty=1.15, max_points=8,
            out_dir=out, warm=False, score=False,  # the fake's text has no content to cover
        )
    )


def test_bundled_questions_cover_the_nine_categories() -> None:
    qs = sot_bench.load_questions()
    assert len(qs) >= 40
    assert len({q["id"] for q in qs}) == len(qs)
    cats = {q["category"] for q in qs}
    assert cats == set(sot_bench.CATEGORIES)
    assert all(sum(q["category"] == c for q in qs) >= 4 for c in cats)


def test_select_is_round_robin_and_checks_input(tmp_path: Path) -> None:
    qs = sot_bench.load_questions()
    first = sot_bench.select(qs, limit=9)
    assert [q["category"] for q in first] == list(sot_bench.CATEGORIES)
    only = sot_bench.select(qs, categories=["math", "coding"])
    assert {q["category"] for q in only} == {"math", "coding"}
    with pytest.raises(InputError, match="no questions in categories"):
        sot_bench.select(qs, categories=["poetry"])
    with pytest.raises(InputError, match="not found"):
        sot_bench.load_questions(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no id"}\n')
    with pytest.raises(InputError, match='"id"'):
        sot_bench.load_questions(bad)
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": 1, "question": "Why?"}\n')
    assert sot_bench.load_questions(good) == [{"id": "1", "category": "uncategorized", "question": "Why?"}]


def test_report_schema_and_arithmetic(stub_router: None, tmp_path: Path) -> None:
    report = run(QUESTIONS, out=tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["summary"] == json.loads(json.dumps(report["summary"]))
    assert report["complete"] is True and report["config"]["max_tokens"] == 128
    rows = report["questions"]
    assert [r["id"] for r in rows] == ["g1", "k1", "c1"]
    for r in rows:
        assert set(r) >= {"id", "category", "mode_auto", "normal", "sot", "auto", "speedup_sot", "speedup_auto", "length_ratio"}
        assert set(r["normal"]) >= {"latency_s", "output_tokens", "truncated", "answer"}
        assert set(r["sot"]) >= {"latency_s", "output_tokens", "points", "truncated", "fallback", "answer"}
        assert set(r["auto"]) >= {"latency_s", "output_tokens"}
        n, s, a = r["normal"], r["sot"], r["auto"]
        assert r["speedup_sot"] == pytest.approx(n["latency_s"] / s["latency_s"], rel=1e-3)
        assert r["speedup_auto"] == pytest.approx(n["latency_s"] / a["latency_s"], rel=1e-3)
        assert r["length_ratio"] == pytest.approx(s["output_tokens"] / n["output_tokens"], rel=1e-3)
        assert n["output_tokens"] == 60 and not n["truncated"] and n["answer"] == LONG_NORMAL
        # The skeleton's three points, or fewer when the length plan (learned from this run's 60-token normal
        # answers, never the question's own) asks for fewer.
        assert s["points"] == min(3, s["length_plan"]["points"]) and s["fallback"] is None and not s["truncated"]
        assert s["output_tokens"] == s["skeleton_tokens"] + s["expansion_tokens"]
    plans = [r["sot"]["length_plan"] for r in rows]
    assert plans[0]["source"] == "prior"  # a fresh history: nothing learned before this run
    assert plans[1]["source"] == "median" and plans[1]["expected_tokens"] == 64  # g1's 60 tokens, raised to 2 points' floor
    assert (tmp_path / "length-history.jsonl").is_file()
    assert [r["mode_auto"] for r in rows] == ["sot", "sot", "normal"]
    assert rows[2]["auto"]["output_tokens"] == rows[2]["normal"]["output_tokens"]

    summary = report["summary"]
    assert set(summary) >= {"speedup_sot_median", "speedup_auto_median", "length_ratio_median", "fallbacks", "n", "by_category"}
    assert summary["n"] == 3 and summary["fallbacks"] == 0 and summary["normal_truncated"] == 0
    assert summary["length_ratio_median"] == pytest.approx(sorted(r["length_ratio"] for r in rows)[1], abs=1e-4)
    assert summary["suited"]["n"] == 2 and summary["by_category"]["coding"]["n"] == 1
    assert summary["routing"]["math_coding_never_sot"] is True
    assert summary["auto_routed_normal"]["n"] == 1
    assert summary["targets"]["math_coding_never_sot"] is True


def test_truncated_normal_answers_are_reported(stub_router: None) -> None:
    report = run(QUESTIONS[:1], max_tokens=40)  # the normal answer has 60 words
    row = report["questions"][0]
    assert row["normal"]["truncated"] is True and row["normal"]["finish_reason"] == "length"
    assert report["summary"]["normal_truncated"] == 1
    assert report["summary"]["speedup_sot_median_untruncated"] is None


def _row(qid: str, cat: str, routed: str, normal_s: float, auto_s: float) -> dict[str, Any]:
    return {
        "id": qid, "category": cat, "mode_auto": routed,
        "normal": {"latency_s": normal_s, "output_tokens": 100, "truncated": False},
        "sot": {"latency_s": 1.0, "output_tokens": 50, "points": 4, "truncated": False, "fallback": None},
        "auto": {"latency_s": auto_s, "output_tokens": 100, "route_s": 0.001},
        "speedup_sot": normal_s, "speedup_auto": normal_s / auto_s, "length_ratio": 0.5,
    }


def test_summary_overhead_and_routing_checks() -> None:
    rows = [
        _row("m1", "math", "normal", 2.0, 2.02),
        _row("m2", "math", "sot", 2.0, 1.0),
        _row("w1", "writing", "normal", 4.0, 5.0),
        _row("f1", "fermi", "normal", 1.0, 1.0),
    ]
    s = sot_bench.summarize(rows)
    a = s["auto_routed_normal"]
    assert a["n"] == 3
    assert a["overhead_median"] == pytest.approx(0.01)
    assert a["overhead_max"] == pytest.approx(0.25) and a["overhead_max_id"] == "w1"
    assert s["routing"]["math_coding_routed_sot"] == ["m2"]
    assert s["targets"]["math_coding_never_sot"] is False
    assert s["targets"]["auto_normal_overhead_max<=25%"] is True
    assert s["targets"]["speedup_sot_suited_median>=2.5"] is None  # no suited questions


def test_plot_writes_a_png(stub_router: None, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = run(QUESTIONS[:2])
    path = sot_bench.plot(report, tmp_path / "speedup.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_registers_the_command() -> None:
    from vivace.cli import build_parser

    args = build_parser().parse_args(["bench", "sot", "--limit", "2", "--categories", "math", "--out", "x"])
    assert args.limit == 2 and args.categories == ["math"] and args.max_tokens is None and callable(args.handler)


def test_command_writes_report_plot_and_json(stub_router: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vivace.cli import main

    async def no_warm_up(backend: Any, opts: dict[str, Any]) -> None:
        return None

    monkeypatch.setattr(sot_bench, "warm_up", no_warm_up)
    out = tmp_path / "out"
    rc = main(["bench", "sot", "--backend", "fake", "--limit", "2", "--max-tokens", "64", "--out", str(out), "--json", "--home", str(tmp_path / "home")])
    assert rc == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["summary"]["n"] == 2 and record["config"]["max_tokens"] == 64
    report = json.loads((out / "report.json").read_text())
    assert [q["category"] for q in report["questions"]] == ["generic", "knowledge"]
    # matplotlib is a dependency of the test environment (3.x), so the plot must be there.
    assert record["plot"] and Path(record["plot"]).name == "speedup.png" and (out / "speedup.png").is_file()
    assert (out / "speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.engine
def test_run_bench_on_the_real_engine(engine: Any, run: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two bundled questions, each normal, SoT and auto on the session's vLLM engine (the real router)."""
    import vivace.agents as agents

    traces: list[Any] = []
    real_ask = agents.ask

    async def recording_ask(*args: Any, **kwargs: Any) -> Any:
        trace = await real_ask(*args, **kwargs)
        traces.append(trace)
        return trace

    monkeypatch.setattr(agents, "ask", recording_ask)
    questions = sot_bench.select(sot_bench.load_questions(), limit=2)
    report = run(sot_bench.run_bench(
        engine, questions, max_tokens=64, repetition_penalty=1.15, max_points=3, out_dir=tmp_path, warm=False,
    ))
    assert report["complete"] is True and report["config"]["backend"] == "vllm"
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["n"] == 2
    rows = report["questions"]
    assert [r["id"] for r in rows] == [q["id"] for q in questions] and len(traces) == 6
    for i, r in enumerate(rows):
        tn, ts, ta = traces[3 * i: 3 * i + 3]
        assert (tn.mode, ta.question) == ("normal", r["question"])
        for t in (tn, ts, ta):
            assert t.status == "done" and t.calls and t.backend == "vllm"
        n, s = r["normal"], r["sot"]
        # Latencies and token counts are the traces' own, measured on the engine.
        assert n["latency_s"] == round(tn.latency_s, 4) and n["latency_s"] > 0
        assert s["latency_s"] == round(ts.latency_s, 4) and s["latency_s"] > 0
        assert r["auto"]["latency_s"] == round(ta.latency_s, 4) > 0
        assert n["output_tokens"] == sum(c.output_tokens for c in tn.calls) > 0
        assert s["output_tokens"] == sum(c.output_tokens for c in ts.calls) > 0
        assert all(c.output_tokens <= 64 for c in tn.calls + ts.calls)
        assert n["truncated"] == any(c.finish_reason == "length" for c in tn.calls)
        assert r["speedup_sot"] == pytest.approx(n["latency_s"] / s["latency_s"], abs=1e-4)
        assert r["speedup_auto"] == pytest.approx(n["latency_s"] / r["auto"]["latency_s"], abs=1e-4)
        assert r["length_ratio"] == pytest.approx(s["output_tokens"] / n["output_tokens"], abs=1e-4)
        # The SoT answer's tokens are its skeleton's, its expansions' and (only on a fallback) normal decoding's.
        fallback_tokens = sum(c.output_tokens for c in ts.calls if c.node == "normal")
        assert s["skeleton_tokens"] > 0 and s["points"] <= 3
        assert s["output_tokens"] == s["skeleton_tokens"] + s["expansion_tokens"] + fallback_tokens
        assert (fallback_tokens > 0) == bool(s["fallback"])
        cov = r["coverage"]  # MiniLM at sentence level, between the two real answers
        assert 0.0 <= cov["normal_in_sot"] <= 1.0 and 0.0 <= cov["sot_in_normal"] <= 1.0
        # No sentence matched: every best similarity is under the threshold, so their mean is too (and vice versa).
        assert cov["normal_in_sot"] > 0 or cov["normal_in_sot_soft"] < 0.6
        assert cov["normal_in_sot"] < 1 or cov["normal_in_sot_soft"] >= 0.6
    summary = report["summary"]
    med = lambda xs: pytest.approx(sorted(xs)[0] / 2 + sorted(xs)[1] / 2, abs=1e-4)  # noqa: E731
    assert summary["n"] == 2
    assert summary["speedup_sot_median"] == med([r["speedup_sot"] for r in rows])
    assert summary["speedup_auto_median"] == med([r["speedup_auto"] for r in rows])
    assert summary["length_ratio_median"] == med([r["length_ratio"] for r in rows])
    assert summary["overall"]["coverage_median"] == med([r["coverage"]["normal_in_sot"] for r in rows])
    assert summary["fallbacks"] == sum(bool(r["sot"]["fallback"]) for r in rows)
    assert summary["normal_truncated"] == sum(r["normal"]["truncated"] for r in rows)


def test_the_reference_arm_is_a_second_normal_answer_under_another_system_prompt(stub_router: None) -> None:
    seen: list[GenerationRequest] = []

    def reply(request: GenerationRequest) -> str:
        if request.tag == "bench-sot/reference":
            seen.append(request)
            return " ".join(f"other{i}" for i in range(30))
        return responder(request)

    report = asyncio.run(sot_bench.run_bench(
        FakeBackend(reply), QUESTIONS[:2], max_tokens=128, repetition_penalty=1.15, max_points=8, warm=False,
        score=False, reference=True))
    rows = report["questions"]
    assert {r.tag for r in seen} == {"bench-sot/reference"} and len({r.request_id for r in seen}) == 2
    assert seen[0].messages[0] == {"role": "system", "content": sot_bench.REFERENCE_SYSTEM}
    for r in rows:
        ref = r["reference"]
        assert ref["length_ratio"] == pytest.approx(ref["output_tokens"] / r["normal"]["output_tokens"], rel=1e-3)
        assert ref["answer"].startswith("other0")
    assert report["summary"]["suited"]["reference_length_ratio_median"] == pytest.approx(
        rows[0]["reference"]["length_ratio"], rel=1e-3)
