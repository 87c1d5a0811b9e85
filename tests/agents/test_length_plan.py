"""Length planning: the expected normal length, the point count and budgets, and the controller using them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from vivace.agents import ask
from vivace.agents.sot.length_plan import (
    FLOOR_SHARE,
    POINT_BUDGET_MAX,
    POINT_BUDGET_MIN,
    PRIOR_TOKENS,
    LengthHistory,
    LengthPlan,
    asked_count,
    make_plan,
)
from vivace.assembly import runtime_for
from vivace.config import Config
from vivace.runtime.backend import GenerationRequest
from vivace.runtime.fake import FakeBackend

TOPICS = ("garden", "travel", "money")


def embed(texts: list[str]) -> np.ndarray:
    """One axis per topic word: questions about the same topic are neighbours."""
    rows = [[float(t in text.lower()) for t in TOPICS] + [0.1] for text in texts]
    out = np.asarray(rows, dtype=np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_a_count_named_in_the_question_is_the_plan() -> None:
    assert asked_count("Give me five tips for a tidy garden") == 5
    assert asked_count("List 3 reasons to travel by train.") == 3
    assert asked_count("What are good habits for a tidy home?") is None
    plan = make_plan("Give me five tips for a tidy garden", None, None, 512, 3, 8)
    assert (plan.points, plan.source) == (5, "asked")


def test_without_history_the_prior_plans(tmp_path: Path) -> None:
    plan = make_plan("How do I plan a garden?", LengthHistory(tmp_path, "m"), embed, 1024, 3, 8)
    assert plan.source == "prior" and plan.expected_tokens == PRIOR_TOKENS
    assert plan.points == round(PRIOR_TOKENS / 48)
    capped = make_plan("How do I plan a garden?", None, None, 128, 3, 8)
    assert capped.expected_tokens == 128 and capped.points == 3  # never past the cap, never under min_points


def test_the_nearest_normal_answers_set_the_expected_length(tmp_path: Path) -> None:
    hist = LengthHistory(tmp_path, "vllm-model")
    for i in range(4):
        hist.record(f"How should I lay out garden bed {i}?", 400)
        hist.record(f"What is a cheap travel trick number {i}?", 100)
    garden = make_plan("What should I plant in a small garden?", hist, embed, 1024, 3, 8)
    travel = make_plan("How do I travel light?", hist, embed, 1024, 3, 8)
    assert garden.source == travel.source == "history"
    assert abs(garden.expected_tokens - 400) <= 2 and garden.points == 8
    assert abs(travel.expected_tokens - 100) <= 2 and travel.points == 3
    # Read back from disk by a fresh instance: the same rows.
    assert sorted(LengthHistory(tmp_path, "vllm-model").rows()) == sorted(hist.rows())


def test_a_question_never_learns_its_own_length(tmp_path: Path) -> None:
    hist = LengthHistory(tmp_path, "m")
    hist.record("How do I save money on travel?", 700)
    hist.record("How do I save money on travel?", 650)  # the latest answer replaces the earlier one
    assert hist.rows() == [("How do I save money on travel?", 650)]
    expected, source = hist.predict("How do I save money on travel?", embed)
    assert (expected, source) == (None, "prior")
    hist.record("Where should I travel in spring?", 90)
    assert hist.predict("How do I save money on travel?", embed) == (90, "median")


def test_torn_lines_are_skipped(tmp_path: Path) -> None:
    hist = LengthHistory(tmp_path, "m")
    hist.record("Why do leaves fall?", 120)
    with hist.path.open("a", encoding="utf-8") as fh:
        fh.write('{"question": "half a li\n')
    assert LengthHistory(tmp_path, "m").rows() == [("Why do leaves fall?", 120)]


def test_point_budgets_are_equal_shares_with_a_floor() -> None:
    plan = LengthPlan(expected_tokens=300, points=6, source="history")
    assert plan.point_budget(6) == (50, int(50 * FLOOR_SHARE))
    assert plan.point_budget(2)[0] == POINT_BUDGET_MAX  # two points cannot carry 300 tokens without a slow branch
    assert plan.point_budget(40)[0] == POINT_BUDGET_MIN
    assert plan.sentences(6) >= 2


SKELETON = " Pick a sunny spot\n2. Test the soil\n3. Choose easy plants\n4. Water in the morning\n5. Mulch the beds"


class Recording(FakeBackend):
    def __init__(self) -> None:
        super().__init__(self.reply)
        self.requests: list[GenerationRequest] = []

    def reply(self, request: GenerationRequest) -> str:
        if all(r.request_id != request.request_id for r in self.requests):  # asked once per count and once per reply
            self.requests.append(request)
        if request.tag.endswith("/skeleton"):
            return SKELETON
        if "/expand/" in request.tag:
            return " Some detail about this point."
        return "A normal answer " + "word " * 150


def test_the_controller_asks_for_the_planned_points_and_gives_them_equal_floors(tmp_path: Path) -> None:
    backend = Recording()
    runtime = runtime_for(Config(home=tmp_path), backend, save_runs=False)
    question = "Give me four tips for a vegetable garden"
    trace = asyncio.run(ask(question, runtime, mode="sot", max_tokens=512))
    plan = trace.sot["length_plan"]
    assert plan["points"] == 4 and plan["source"] == "asked"
    skeleton = next(r for r in backend.requests if r.tag.endswith("/skeleton"))
    assert "a numbered list of 4 different points" in skeleton.messages[0]["content"]
    assert "\n5." in skeleton.stop  # the skeleton ends at the planned count
    expands = [r for r in backend.requests if "/expand/" in r.tag]
    assert len(expands) == 4 == len(trace.points)
    budget, floor = LengthPlan(**plan).point_budget(4)
    assert {(r.max_tokens, r.min_tokens) for r in expands} == {(budget, floor)}
    assert budget == max(POINT_BUDGET_MIN, min(POINT_BUDGET_MAX, -(-plan["expected_tokens"] // 4))) and floor > 0


def test_normal_answers_feed_the_history_and_the_plan_can_be_turned_off(tmp_path: Path) -> None:
    backend = Recording()
    asyncio.run(ask("Why do gardens need sun?", runtime_for(Config(home=tmp_path), backend, save_runs=False),
                    mode="normal", max_tokens=512))
    assert not (tmp_path / "lengths").exists()  # a runtime that saves no runs learns nothing either
    runtime = runtime_for(Config(home=tmp_path), backend)
    asyncio.run(ask("How do I start a small garden?", runtime, mode="normal", max_tokens=512))
    rows = LengthHistory(tmp_path / "lengths", f"{backend.name}-{backend.model}").rows()
    assert len(rows) == 1 and rows[0][0] == "How do I start a small garden?" and rows[0][1] > 100
    backend.requests.clear()
    trace = asyncio.run(ask("What should I grow on a balcony?", runtime, mode="sot", max_tokens=512,
                            length_plan=False))
    assert trace.sot["length_plan"] is None
    assert all(r.min_tokens == 0 for r in backend.requests)
    skeleton = next(r for r in backend.requests if r.tag.endswith("/skeleton"))
    assert "4 to 8 different points" in skeleton.messages[0]["content"]


def test_auto_decodes_normally_what_similar_questions_answered_briefly(tmp_path: Path) -> None:
    backend = Recording()
    runtime = runtime_for(Config(home=tmp_path), backend)
    hist = LengthHistory(tmp_path / "lengths", f"{backend.name}-{backend.model}")
    for i in range(4):
        hist.record(f"Why is the sky blue, part {i}?", 40)
    trace = asyncio.run(ask("How do I plan a vegetable garden for a family of four?", runtime, mode="auto",
                            max_tokens=512, load_aware=False))
    assert trace.mode == "normal" and trace.router["reason"].startswith("length plan:")
    forced = asyncio.run(ask("How do I plan a vegetable garden for a family of four?", runtime, mode="sot",
                             max_tokens=512))
    assert forced.mode == "sot"  # a requested mode is kept; the plan only sizes it
