"""The skeleton parser and expansion clean-up on messy small-model output."""

from __future__ import annotations

import pytest

from vivace.agents.sot.skeleton import join_points, parse_skeleton, strip_echo

PARSE_CASES = [
    ("numbered with dots", "1. Plan meals\n2. Write a list\n3. Compare prices", ["Plan meals", "Write a list", "Compare prices"]),
    ("numbered with parens", "1) Plan meals\n2) Write a list\n3) Compare prices", ["Plan meals", "Write a list", "Compare prices"]),
    ("dash bullets", "- Plan meals\n- Write a list\n- Compare prices", ["Plan meals", "Write a list", "Compare prices"]),
    ("star bullets", "* Plan meals\n* Write a list", ["Plan meals", "Write a list"]),
    ("markdown bold", "1. **Plan meals**\n2. **Write a list**:", ["Plan meals", "Write a list"]),
    ("duplicates dropped", "1. Plan meals\n2. Write a list\n3. Plan meals.\n4. plan MEALS", ["Plan meals", "Write a list"]),
    ("run-on line", "1. Plan meals 2. Write a list 3. Compare prices", ["Plan meals", "Write a list", "Compare prices"]),
    ("run-on keeps inner numbers", "1. Buy 2 kinds of bread 2. Cook", ["Buy 2 kinds of bread", "Cook"]),
    ("preamble and trailing prose ignored", "Skeleton:\n1. Plan meals\n2. Write a list\nThat is all.", ["Plan meals", "Write a list"]),
    ("numbering restart ends the list", "1. Plan meals\n2. Write a list\n\nAgain:\n1. Plan meals\n2. Other", ["Plan meals", "Write a list"]),
    ("sub-bullets under numbers ignored", "1. Plan meals\n   - on Sunday\n2. Write a list", ["Plan meals", "Write a list"]),
    ("marker alone on its line", "1.\nPlan meals\n2. Write a list", ["Plan meals", "Write a list"]),
    ("step prefix", "Step 1: Plan meals\nStep 2: Write a list", ["Plan meals", "Write a list"]),
    ("blank lines between points", "1. Plan meals\n\n2. Write a list", ["Plan meals", "Write a list"]),
]


@pytest.mark.parametrize("name,text,expected", PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_parse_table(name: str, text: str, expected: list[str]) -> None:
    parsed = parse_skeleton(text)
    assert parsed.points == expected
    assert parsed.usable and parsed.fallback is None


def test_long_point_is_shortened() -> None:
    text = "1. " + " ".join(f"w{i}" for i in range(30)) + "\n2. Short"
    points = parse_skeleton(text).points
    assert len(points[0].split()) == 12 and points[1] == "Short"


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "no list in the skeleton"),
        ("Exercise is good for you. It helps the heart.", "no list in the skeleton"),
        ("1. Only one point", "only 1 usable point(s) in the skeleton (need 2)"),
        ("1. Same\n2. same\n3. SAME.", "only 1 usable point(s) in the skeleton (need 2)"),
        ("1. ...\n2. -", "no usable point in the skeleton"),
    ],
)
def test_fallback_reasons(text: str, reason: str) -> None:
    parsed = parse_skeleton(text)
    assert not parsed.usable
    assert parsed.fallback == reason


def test_min_points_one_accepts_a_single_point() -> None:
    assert parse_skeleton("1. Only one point", min_points=1).usable
    assert parse_skeleton("1. Apples\n2. Pears", min_points=3).fallback == "only 2 usable point(s) in the skeleton (need 3)"


def test_point_cap() -> None:
    text = "\n".join(f"{i}. Point number {i}" for i in range(1, 13))
    parsed = parse_skeleton(text, max_points=8)
    assert len(parsed.points) == 8
    assert parsed.points[-1] == "Point number 8"
    assert "Point number 9" in parsed.dropped
    assert len(parse_skeleton(text, max_points=3).points) == 3
    with pytest.raises(ValueError):
        parse_skeleton(text, max_points=0)


POINTS = ["Plan meals", "Write a list", "Compare prices"]


@pytest.mark.parametrize(
    "index,text,expected",
    [
        (2, ": Make a list before you go shopping.", "Make a list before you go shopping."),
        (2, " - Make a list.\n3. Compare prices\n4. Buy", "Make a list."),
        (2, "\nWrite a list\nMake a list of what you need.", "Make a list of what you need."),
        (2, "2. Write a list: keep it short.", "Write a list: keep it short."),
        (1, " helps you avoid waste. 2. Write a list", "helps you avoid waste."),
        (1, " saves money.\nCompare prices\nmore", "saves money."),
        (3, " such as unit prices.\n1. Plan meals\n2. Write a list", "such as unit prices."),
    ],
)
def test_strip_echo(index: int, text: str, expected: str) -> None:
    assert strip_echo(text, index, POINTS) == expected


def test_join_in_point_order_and_marks_failures() -> None:
    answer = join_points(
        POINTS,
        {3: "Check the unit price.", 1: "saves money.", 2: ""},
        failed={2: "timed out"},
    )
    assert answer.splitlines() == [
        "1. Plan meals saves money.",
        "2. Write a list: [this point failed: timed out]",
        "3. Compare prices: Check the unit price.",
    ]
