"""Content coverage between answers (vivace_bench.coverage) with the real bundled MiniLM."""

from __future__ import annotations

import pytest

from vivace_bench.coverage import coverage, mutual, sentences

NORMAL = ("Regular exercise strengthens the heart and lowers blood pressure. It improves mood by releasing "
          "endorphins. Exercise also helps people sleep better at night. It reduces the risk of type 2 diabetes.")


def test_sentences_drop_numbering_and_fragments() -> None:
    text = "1. Heart health: Exercise makes the heart stronger.\n2. Mood.\n- Sleep: people who exercise sleep better."
    assert sentences(text) == ["Heart health: Exercise makes the heart stronger.", "Sleep: people who exercise sleep better."]


def test_coverage_follows_content_not_wording() -> None:
    paraphrase = ("Working out regularly makes your heart stronger and brings blood pressure down. Endorphins "
                  "released during exercise improve how you feel. People who exercise sleep better. Exercise "
                  "lowers the chance of getting type 2 diabetes.")
    half = ("1. Heart health: Exercise makes the heart stronger and reduces blood pressure.\n"
            "2. Mood: Physical activity releases endorphins that lift your mood.")
    unrelated = "Paris is the capital of France and has many museums. The Eiffel Tower was built in 1889."
    assert coverage(NORMAL, NORMAL)["covered"] == 1.0
    assert coverage(NORMAL, paraphrase)["covered"] == 1.0
    both = mutual(NORMAL, half)
    assert 0.3 < both["normal_in_sot"] < 0.7  # two of the four points, word-weighted
    assert both["sot_in_normal"] == 1.0  # everything SoT said, the normal answer said too
    assert coverage(NORMAL, unrelated)["covered"] == 0.0
    assert coverage(NORMAL, unrelated)["soft"] < coverage(NORMAL, half)["soft"] < 1.0


@pytest.mark.parametrize(("reference", "candidate", "expected"), [("", "anything at all here", None), ("ok", "x", None)])
def test_an_empty_reference_has_no_coverage(reference: str, candidate: str, expected: None) -> None:
    assert coverage(reference, candidate)["covered"] is expected
    assert coverage(NORMAL, "")["covered"] == 0.0
