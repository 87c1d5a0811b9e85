"""The pairwise judge of `vivace bench sot` (vivace_bench.sot_judge): verdict parsing, both orders, the tally."""

from __future__ import annotations

from pathlib import Path

import pytest

from vivace_bench.sot_judge import judge_pair, parse_verdict, tally


@pytest.mark.parametrize(("reply", "verdict"), [
    (" A. It lists more benefits.", "A"), ("B\nBecause it is clearer.", "B"), (" **B** - clearer", "B"),
    (" Tie, both are fine", "tie"), ("Verdict: b", "B"), (" Both are good", None), (" The first one", None), ("", None),
])
def test_verdicts_are_read_only_in_the_asked_format(reply: str, verdict: str | None) -> None:
    assert parse_verdict(reply) == verdict


def test_the_tally_counts_ties_half_and_leaves_unparsed_out() -> None:
    verdicts = [{"outcome": o} for o in ("win", "win", "tie", "lose", "unparsed")]
    t = tally(verdicts)
    assert (t["win"], t["tie"], t["lose"], t["unparsed"], t["n"]) == (2, 1, 1, 1, 5)
    assert t["sot_score"] == pytest.approx((2 + 0.5) / 4)
    assert tally([{"outcome": "unparsed"}])["sot_score"] is None


class Scripted:
    """A judge that always prefers the answer mentioning 'heart', wherever it is shown."""

    name, model = "scripted", "judge"

    async def generate(self, request):  # type: ignore[no-untyped-def]
        from vivace.runtime.fake import FakeBackend

        text = request.messages[-1]["content"]
        a = text.split("[Answer A]")[1].split("[Answer B]")[0]
        reply = " A" if "heart" in a else " B"
        async for event in FakeBackend(lambda r: reply).generate(request):
            yield event


def test_a_win_needs_both_orders(run) -> None:
    better, worse = "Exercise strengthens the heart and lifts the mood.", "Exercise is good."
    assert run(judge_pair(Scripted(), "Why exercise?", normal=worse, sot=better))["outcome"] == "win"
    assert run(judge_pair(Scripted(), "Why exercise?", normal=better, sot=worse))["outcome"] == "lose"


@pytest.mark.engine
def test_the_real_model_judges_in_both_orders(engine, run) -> None:
    verdict = run(judge_pair(engine, "Why exercise?", "Exercise strengthens the heart, lifts the mood and helps sleep.",
                             "Exercise."))
    assert verdict["sot_first"] in ("A", "B", "tie", None) and verdict["normal_first"] in ("A", "B", "tie", None)
    first, second = verdict["sot_first"], verdict["normal_first"]
    expected = ("unparsed" if None in (first, second) else "win" if (first, second) == ("A", "B")
                else "lose" if (first, second) == ("B", "A") else "tie")
    assert verdict["outcome"] == expected


def test_a_judge_model_without_a_judge_url_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vivace.cli import main

    rc = main(["bench", "sot", "--backend", "fake", "--judge-model", "m", "--home", str(tmp_path),
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "--judge-model needs --judge-base-url" in capsys.readouterr().err
