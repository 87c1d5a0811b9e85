"""The fleet's choice of server (vivace.runtime.fleet), as pure logic: no servers needed to decide."""

from __future__ import annotations

import asyncio

from vivace.agents.sot.controller import POINT_PROMPT, skeleton_listing
from vivace.runtime.fleet import Fleet, prefix_blocks
from vivace.runtime.prompts import render


async def _up(url: str) -> bool:
    return True


def _point_prompts(question: str, points: list[str]) -> list[list[bytes]]:
    out = []
    for i, point in enumerate(points, 1):
        messages, prefill = render(POINT_PROMPT, question=question, skeleton=skeleton_listing(points), index=i, point=point,
                                   sentences="2 to 4")
        out.append(prefix_blocks(messages, prefill))
    return out


def _send(fleet: Fleet, prompts: list[list[bytes]]) -> list[str]:
    """Pick a server for each prompt as if they were all sent at once (each stays outstanding)."""
    picks = []
    for blocks in prompts:
        url = fleet.pick(blocks, set())
        fleet.outstanding[url] += 1
        picks.append(url)
    return picks


def test_blocks_agree_exactly_as_far_as_the_prompts_do() -> None:
    a = prefix_blocks([{"role": "user", "content": "x" * 200 + "tail one " * 10}])
    b = prefix_blocks([{"role": "user", "content": "x" * 200 + "tail two " * 10}])
    # The role marker and 200 x's: 205 shared characters, so three whole 64-character blocks agree.
    assert a[:3] == b[:3] and a[3] != b[3] and len(a) == len(b) == 4
    assert prefix_blocks([{"role": "user", "content": "short"}]) == []  # a partial block is never shared


def test_sot_siblings_share_a_server_and_unrelated_runs_spread() -> None:
    points = ["Economic collapse", "Rise of barbarian tribes", "Internal power struggles", "Overextended borders"]
    fleet = Fleet(["a", "b"], _up)
    first = _send(fleet, _point_prompts("Why did the Western Roman Empire fall?", points))
    assert len(set(first)) == 1  # every sibling where the first one went
    # Another question's points share only the template's opening: not enough to pull them to a busy server.
    second = _send(fleet, _point_prompts("How do vaccines train the immune system?", points))
    assert len(set(second)) == 1 and second[0] != first[0]


def test_affinity_yields_to_load_and_can_be_off() -> None:
    prompts = _point_prompts("What makes a good password?", [f"Point number {i}" for i in range(8)])
    fleet = Fleet(["a", "b"], _up, slack=2)
    picks = _send(fleet, prompts)
    # Its server takes siblings until it is `slack` ahead; then the other one, which from then on holds the
    # prefix too, and the two share the rest by load.
    assert picks[:3] == [picks[0]] * 3 and picks[3] != picks[0]
    assert abs(picks.count("a") - picks.count("b")) <= 2
    spread = Fleet(["a", "b"], _up, affinity=False)
    assert sorted(_send(spread, prompts[:4])) == ["a", "a", "b", "b"]


def test_a_server_that_was_ejected_comes_back_without_its_record(run) -> None:
    prompts = _point_prompts("Why is the sky blue?", ["Scattering", "Wavelengths"])

    async def go() -> tuple[str, str]:
        fleet = Fleet(["a", "b"], _up)
        home = fleet.pick(prompts[0], set())
        fleet.failed(home)  # ejected; the probe (always healthy here) re-admits it and forgets what it held
        for _ in range(100):
            if home not in fleet.ejected_until:
                break
            await asyncio.sleep(0.05)
        fleet.outstanding["a" if home == "b" else "b"] = 0
        fleet.outstanding[home] = 1  # the other server is now less loaded, and nothing pulls to `home`
        again = fleet.pick(prompts[1], set())
        await fleet.aclose()
        return home, again

    home, again = run(go())
    assert again != home
