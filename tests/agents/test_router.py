"""The router on clear cases: cues alone, and the MiniLM classifier (loaded from the local package)."""

from __future__ import annotations

import pytest

from vivace.agents.router import NORMAL, SOT, cue, load_examples, route


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
        ("Write a poem about the moon.", "creative writing"),
        ("Compose a short story about a brave mouse.", "creative writing"),
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
    assert labels == {SOT, NORMAL}
    categories = {e.category for e in examples}
    assert {"generic", "knowledge", "counterfactual", "math", "coding", "fermi", "writing"} <= categories
    assert min(sum(e.label == label for e in examples) for label in labels) >= 30


SOT_CLEAR = [
    "What are the advantages of cycling to work?",
    "How can I improve my time management skills?",
    "What would the world be like if dinosaurs had never gone extinct?",
    "What are the main causes of air pollution in cities?",
    "How can parents help their children do well at school?",
]
NORMAL_CLEAR = [
    "What is the square of 12?",
    "Reverse a linked list in C.",
    "How many piano keys are pressed worldwide each day?",
    "Write a haiku about rain.",
    "What is the capital of Australia?",
]


@pytest.mark.parametrize("question", SOT_CLEAR)
def test_classifier_sends_list_shaped_questions_to_sot(question: str) -> None:
    mode, reason = route(question)
    assert mode == SOT, reason
    assert reason.startswith("classifier: sot")


@pytest.mark.parametrize("question", NORMAL_CLEAR)
def test_normal_questions_stay_normal(question: str) -> None:
    mode, reason = route(question)
    assert mode == NORMAL, reason
