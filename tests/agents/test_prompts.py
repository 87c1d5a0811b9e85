"""Prompt templates are package data with sections and a prefill."""

from __future__ import annotations

import pytest

from vivace.runtime import prompts
from vivace.errors import InputError


def test_skeleton_template_renders_with_prefill() -> None:
    messages, prefill = prompts.render("sot_skeleton", question="Why read books?", count="4 to 8")
    assert messages[0]["role"] == "system"
    assert messages[-1] == {"role": "user", "content": "Why read books?"}
    assert prefill == "1."


def test_point_template_puts_the_point_last() -> None:
    messages, prefill = prompts.render("sot_point", question="Q?", skeleton="1. A\n2. B", index=2, point="B",
                                      sentences="2 to 4")
    content = messages[-1]["content"]
    assert content.index("Q?") < content.index("1. A\n2. B") < content.rindex("B")
    assert content.rstrip().endswith("Point 2: B")
    assert prefill == "2. B:"


def test_parse_template_rules() -> None:
    template = prompts.parse_template("t", "[system]\nS {x}\n[user]\nU {x}\n")
    assert template.render(x=1) == ([{"role": "system", "content": "S 1"}, {"role": "user", "content": "U 1"}], None)
    with pytest.raises(InputError):
        prompts.parse_template("t", "no sections")
    with pytest.raises(InputError):
        prompts.parse_template("t", "[user]\nU\n[assistant]\nA\n[assistant]\nB")
    with pytest.raises(InputError, match="needs a value"):
        template.render()
    with pytest.raises(InputError):
        prompts.load_template("no_such_prompt")
