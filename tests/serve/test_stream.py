"""The answer and reply streams (vivace.serve.stream, .chat) over recorded events: what may be sent, and when."""

from __future__ import annotations

from typing import Any

from vivace.agents.chat import attempt_id, call_id
from vivace.agents.events import AgentDelta, AnswerDone, BranchDone, SkeletonDone
from vivace.agents.sot.skeleton import join_points
from vivace.serve.chat import ReplyStream
from vivace.serve.stream import AnswerStream
from vivace.trace import RunTrace


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


def _deltas(stream: ReplyStream, pieces: list[str], attempt: int = 1) -> list[list[dict[str, Any]]]:
    """What the stream lets go after each piece of the chat agent's streamed reply."""
    out = []
    for piece in pieces:
        stream(AgentDelta("r1", step="chat", agent="chat", text=piece, request_id=attempt_id("r1", attempt)))
        out.append(stream.take())
    return out


def test_each_tool_call_goes_out_when_its_entry_closes() -> None:
    chat = {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}
    stream = ReplyStream("r1", streams_answer=False, chat=chat)
    pieces = ['{"tool_calls": [{"name": "f", "arguments": {"q": "a } b"', '}}', ', {"name": "f", "argu',
              'ments": {"q": "c"}}', "]}"]
    sent = _deltas(stream, pieces)
    first = {"index": 0, "id": call_id("r1", 0), "type": "function",
             "function": {"name": "f", "arguments": '{"q": "a } b"}'}}
    second = {"index": 1, "id": call_id("r1", 1), "type": "function",
              "function": {"name": "f", "arguments": '{"q": "c"}'}}
    # A brace inside an argument string ends nothing; each call goes out with its own closing brace.
    assert sent == [[], [{"tool_calls": [first]}], [], [{"tool_calls": [second]}], []]
    trace = RunTrace(question="q", mode="agent:chat", model="m", backend="b", run_id="r1")
    trace.meta["tool_calls"] = [{"id": c["id"], "type": "function", "function": c["function"]} for c in stream.calls]
    assert stream.finish(trace) == [] and stream.finish_reason(trace) == "tool_calls"
    assert stream.message(trace) == {"role": "assistant", "content": None, "tool_calls": trace.meta["tool_calls"]}


def test_a_content_reply_under_tools_streams_its_decoded_text() -> None:
    stream = ReplyStream("r1", streams_answer=False, chat={"tools": [{"type": "function", "function": {"name": "f"}}]})
    sent = _deltas(stream, ['{"content": "', 'Hi \\"there', '\\"\\u00e', '9 \\ud83d', '\\ude00!"}'])
    text = "".join(d["content"] for step in sent for d in step)
    assert text == 'Hi "there"é 😀!' and sent[2] == [{"content": '"'}]  # an escape goes out only once it is whole
    trace = RunTrace(question="q", mode="agent:chat", model="m", backend="b", run_id="r1")
    trace.answer = text
    assert stream.finish(trace) == [] and stream.finish_reason(trace) == "stop"


def test_a_json_reply_goes_whole_once_validated() -> None:
    stream = ReplyStream("r1", streams_answer=False, chat={"response_format": {"type": "json_object"}})
    assert _deltas(stream, ['{"a": 1', "11111"]) == [[], []]
    assert _deltas(stream, ['{"a": 2}'], attempt=2) == [[]]  # the retry: the first attempt was never sent
    trace = RunTrace(question="q", mode="agent:chat", model="m", backend="b", run_id="r1")
    trace.answer = '{"a": 2}'
    assert stream.finish(trace) == [{"content": '{"a": 2}'}]
