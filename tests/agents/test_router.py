"""The router on clear cases: cues alone, and the MiniLM classifier (loaded from the local package).

Also how it loads: once, in a daemon thread that a cancelled run does not wait for.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.helpers import cli_env, default_signals, read_until
from vivace.agents.sot import router
from vivace.agents.sot.router import NORMAL, SOT, cue, load_examples, parse_examples, route


@pytest.mark.parametrize(
    "question,name",
    [
        ("Write a Python function that merges two sorted lists.", "coding"),
        ("How do I fix this SQL query?", "coding"),
        ("What is 345 * 12?", "math"),
        ("Solve the equation 2x + 3 = 11.", "math"),
        ("Calculate the compound interest on 1000 dollars at 5% for 3 years.", "math"),
        ("Explain step by step why the sum of two odd numbers is even.", "math"),
        ("Think it through: which weighs more, a pound of bricks or a pound of feathers?", "step-by-step reasoning"),
        ("Estimate the number of trees in New York City.", "estimate"),
        ("How many hairs are there on a human head, in the world on average?", "estimate"),
        ("Write a poem about the moon.", "writing"),
        ("Compose a short story about a brave mouse.", "writing"),
    ],
)
def test_cues_send_to_normal_without_the_classifier(question: str, name: str) -> None:
    assert cue(question) == name
    assert route(question) == (NORMAL, f"cue: {name}")


def test_no_cue_on_generic_questions() -> None:
    for question in ["What are the benefits of regular exercise?", "What would happen if cars could fly?"]:
        assert cue(question) is None


def test_empty_question_goes_to_normal() -> None:
    assert route("   ")[0] == NORMAL


def test_examples_are_labelled_and_balanced() -> None:
    examples = load_examples()
    labels = {e.label for e in examples}
    assert labels == {SOT, NORMAL} and len(examples) >= 300
    categories = {e.category for e in examples}
    assert {"generic", "knowledge", "common-sense", "counterfactual", "roleplay"} <= categories
    assert {"math", "coding", "reasoning", "fermi", "writing", "short"} <= categories
    assert min(sum(e.label == label for e in examples) for label in labels) >= 150
    assert all(sum(e.category == c for e in examples) >= 20 for c in categories)
    assert len({e.question.casefold() for e in examples}) == len(examples)


def test_no_cue_fires_on_a_list_shaped_example() -> None:
    """The cues err toward normal, but not by swallowing the questions SoT is for."""
    assert [(e.question, cue(e.question)) for e in load_examples() if e.label == SOT and cue(e.question)] == []


def test_a_malformed_example_line_names_its_line() -> None:
    with pytest.raises(ValueError, match=r"mine.tsv:2: expected label<TAB>category<TAB>question"):
        parse_examples("sot\tgeneric\tHow can I relax?\nsot generic How can I relax?\n", "mine.tsv")
    with pytest.raises(ValueError, match=r"mine.tsv:1: unknown label 'SoT'"):
        parse_examples("SoT\tgeneric\tHow can I relax?\n", "mine.tsv")


# Requests whose answers are not a list of independent points, in the phrasings people use:
# imperative, polite, "I need", artefact first, word problems, quantities, riddles, facts, yes/no.
MUST_BE_NORMAL = [
    "Write an email to my team announcing the new holiday schedule.",
    "Draft a cover letter for a graphic designer role at a games studio.",
    "Give me a cover letter for a warehouse supervisor job.",
    "Can you write a LinkedIn post celebrating my team's product launch?",
    "Could you compose a short welcome speech for new students?",
    "I need a product description for a handmade leather wallet.",
    "We'd like a blog post about our bakery's tenth anniversary.",
    "Help me write a letter to my future self.",
    "A haiku about a rainy train station, please.",
    "Write a review of a budget hotel in Lisbon.",
    "Write a bio for a jazz pianist's concert programme.",
    "Come up with a slogan for a neighbourhood bike repair shop.",
    "Tell me a bedtime story about a sleepy owl.",
    "Please rewrite this paragraph so it sounds friendlier: Your request has been denied.",
    "Put together a script for a two-minute explainer video about recycling.",
    "What is 48 times 12?",
    "Solve for y: 4y - 6 = 18.",
    "A tank holds 250 litres and leaks 4 litres an hour. How long until it is empty?",
    "What percentage of 80 is 20?",
    "Write a Python function that flattens a nested list.",
    "How do I count the words in a file with bash?",
    "Implement a min-heap in Java.",
    "Why does my React component render twice?",
    "How many cars cross the Golden Gate Bridge each day?",
    "Estimate how much bread is eaten in Paris every morning.",
    "How long would it take to fill a bathtub with a teaspoon?",
    "Explain step by step how many squares there are on a chessboard.",
    "Anna is older than Ben, and Ben is older than Cleo. Who is the youngest?",
    "What number comes next in 3, 9, 27, 81?",
    "What is the capital of Kenya?",
    "Is Mount Kilimanjaro in Tanzania?",
    "Should I say 'fewer' or 'less' for countable things?",
    "What is the square of 12?",
    "Reverse a linked list in C.",
    "How many piano keys are pressed worldwide each day?",
    "Write a haiku about rain.",
    "What is the capital of Australia?",
]


# List-shaped questions in the five SoT categories: advice, overviews, common sense, "what if", roleplay.
MUST_BE_SOT = [
    "What are some ways to make a tiny kitchen more practical?",
    "How can a new manager earn the trust of their team?",
    "What are the main causes of soil erosion?",
    "What were the cultural effects of the Renaissance?",
    "Why do people keep their receipts after shopping?",
    "What should you do if you see a wildfire while driving?",
    "What would happen if nobody could tell lies?",
    "How would farming change if it never rained again?",
    "As a dietitian, what would you suggest for someone who skips breakfast?",
    "Pretend you are a lighthouse keeper. What do you do on a stormy night?",
    "What are the advantages of cycling to work?",
    "How can I improve my time management skills?",
    "What would the world be like if dinosaurs had never gone extinct?",
    "What are the main causes of air pollution in cities?",
    "How can parents help their children do well at school?",
]


@pytest.mark.parametrize("question,expected", [(q, NORMAL) for q in MUST_BE_NORMAL] + [(q, SOT) for q in MUST_BE_SOT])
def test_routes(question: str, expected: str) -> None:
    mode, reason = route(question)
    assert mode == expected, reason
    if expected == SOT:  # no cue fired: the vote chose SoT
        assert reason.startswith("classifier: sot")


class _FakeModel:
    """Stands in for MiniLM: deterministic unit vectors, so the classifier can be built without torch."""

    def encode(self, texts: list[str], **_: Any) -> Any:
        import numpy as np

        vecs = np.array([[len(t) % 7 + 1.0, t.count(" ") + 1.0, 1.0] for t in texts])
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


@pytest.fixture
def slow_load(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A cold router whose embedder load blocks until released; counts the loads started."""
    state: dict[str, Any] = {"calls": 0, "started": threading.Event(), "release": threading.Event()}

    def load() -> _FakeModel:
        state["calls"] += 1
        state["started"].set()
        state["release"].wait(30)
        state["returned"] = True  # released, or 30 s passed: a run that waited for the load would see this
        if state.get("fail"):
            state["fail"] = False
            raise RuntimeError("the embedder failed to load")
        return _FakeModel()

    monkeypatch.setattr(router, "_LOADING", None)
    monkeypatch.setattr(router, "load_embedder", load)
    yield state
    state["release"].set()


QUESTION = "What are the benefits of drinking green tea?"  # no cue: the classifier decides


def test_cancelling_during_the_first_load_returns_at_once_and_the_load_runs_once(slow_load: dict[str, Any]) -> None:
    async def main() -> None:
        first = asyncio.create_task(router.aroute(QUESTION))
        assert await asyncio.to_thread(slow_load["started"].wait, 30)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(main())  # returns while the load is still blocked: nothing joins its thread
    assert not slow_load.get("returned") and not router.loading().done()

    async def again() -> tuple[str, str]:
        second = asyncio.create_task(router.aroute(QUESTION))  # joins the load in progress
        await asyncio.sleep(0)  # one turn of the loop: the second task runs up to its wait on the load
        slow_load["release"].set()
        return await second

    mode, reason = asyncio.run(again())
    assert mode in (SOT, NORMAL) and reason.startswith("classifier:")
    assert route(QUESTION)[1].startswith("classifier:")  # the sync path shares the same classifier
    assert slow_load["calls"] == 1


def test_a_failed_load_is_reported_and_retried(slow_load: dict[str, Any]) -> None:
    slow_load["fail"] = True
    slow_load["release"].set()
    with pytest.raises(RuntimeError, match="failed to load"):
        asyncio.run(router.aroute(QUESTION))
    assert asyncio.run(router.aroute(QUESTION))[1].startswith("classifier:")
    assert slow_load["calls"] == 2


# The CLI in a fresh process whose router load never ends, as on a machine with a cold, busy disk, only more so:
# the load itself takes about a second, too short to send Ctrl-C into reliably. A CLI that waited for it would hang.
SLOW_LOAD_CLI = """
import sys, threading
from vivace.agents.sot import router
router.load_embedder = lambda: threading.Event().wait()
from vivace.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_during_a_cold_router_load_exits_at_once(tmp_path: Path) -> None:
    """The real CLI in a fresh process: Ctrl-C during the router's load must not wait for it."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_LOAD_CLI, "ask", QUESTION, "--backend", "fake", "--mode", "auto"],
                            env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=default_signals)  # Ctrl-C as a terminal delivers it
    assert proc.stderr is not None
    seen = read_until(proc.stderr, lambda line: "loading the router's embedding classifier" in line)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)  # only a guard: the load never ends, so waiting for it would hang
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("Ctrl-C waited for the router's load")
    assert proc.returncode == 130, "".join(seen) + err
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    record = json.loads((tmp_path / "runs" / "runs.jsonl").read_text().splitlines()[-1])
    assert record["status"] == "interrupted" and record["question"] == QUESTION
