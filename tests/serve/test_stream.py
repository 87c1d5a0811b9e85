"""The ordered answer stream (vivace.serve.stream) over recorded events: what may be sent, and when."""

from __future__ import annotations

from vivace.agents.events import AnswerDone, BranchDone, SkeletonDone
from vivace.agents.skeleton import join_points
from vivace.serve.stream import AnswerStream


def test_sot_points_go_out_in_order_even_before_the_skeleton_is_done() -> None:
    points = ["Cardio health", "Mood and sleep", "Strength"]
    bodies = {1: "Exercise strengthens the heart.", 2: "It lifts the mood.", 3: "Muscles grow."}
    stream = AnswerStream(streams_answer=True)
    stream(BranchDone("r", index=2, point=points[1], text=bodies[2], call=None))  # pipelined: out of order, early
    assert stream.take() == ""  # point 1 is not done: nothing may go yet
    stream(BranchDone("r", index=1, point=points[0], text=bodies[1], call=None))
    sent = stream.take()
    assert sent == "1. Cardio health: Exercise strengthens the heart.\n2. Mood and sleep: It lifts the mood."
    stream(SkeletonDone("r", points=points, text="", fallback=None, call=None))
    stream(BranchDone("r", index=3, point=points[2], text=bodies[3], call=None))
    answer = join_points(points, bodies)
    stream(AnswerDone("r", answer=answer, mode="sot", points=points))
    assert sent + stream.take() == answer
