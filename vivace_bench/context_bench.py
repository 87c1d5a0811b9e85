"""`vivace bench context`: long-context QA by stuffing, RAG, and each with compression.

Why it is measured this way (DESIGN, Measuring):
- all four methods run on one engine in one process, interleaved question by
  question, so load drift hits them alike, with the same template, sampling
  and answer cap;
- each call's system prompt starts with a per-call nonce, identical in form
  for every method, so vLLM's prefix cache cannot serve the shared corpus of
  the stuffing baseline from an earlier question (cached tokens are reported);
- TTFT and latency are what the user waits for: retrieval and compression
  overhead plus the engine's own TTFT / end-to-end time from the trace.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import time
from pathlib import Path
from typing import Any

from vivace.config import Config
from vivace_bench import write_report
from vivace.errors import InputError
from vivace_bench.stats import median as _median

log = logging.getLogger(__name__)

METHODS = ("stuff", "rag", "rag_compress", "stuff_compress")


def load_questions(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(f"questions file not found: {path}")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}:{n}: not JSON") from None
        if not isinstance(row, dict) or not row.get("question") or not row.get("answer"):
            raise InputError(f'{path}:{n}: needs "question" and "answer"')
        out.append({k: str(v) for k, v in row.items()})
    if not out:
        raise InputError(f"{path}: no questions")
    return out


def _mean(xs: list[float]) -> float | None:
    return round(statistics.fmean(xs), 4) if xs else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-method figures of report.json."""
    return {
        "prompt_tokens_mean": _mean([r["prompt_tokens"] for r in rows]),
        "ttft_median_s": _median([r["ttft_s"] for r in rows]),
        "latency_median_s": _median([r["latency_s"] for r in rows]),
        "accuracy": _mean([float(r["correct"]) for r in rows]),
        "overhead_median_s": _median([r["overhead_s"] for r in rows]),
        "gold_kept_rate": _mean([float(r["gold_in_context"]) for r in rows]),
        "engine_ttft_median_s": _median([r["engine_ttft_s"] for r in rows]),
        "cached_tokens_mean": _mean([float(r["cached_tokens"] or 0) for r in rows]),
        "compressed_calls": sum(1 for r in rows if r.get("compression", {}).get("compress")),
        "truncated_calls": sum(1 for r in rows if r.get("truncated")),
        "n": len(rows),
    }


def _fit_corpus(docs: list[str], count: Any, budget: int) -> tuple[str, bool]:
    """The whole corpus, or its longest prefix of whole sentences that fits ``budget`` tokens."""
    from vivace.retrieval.chunking import split_sentences

    text = "\n\n".join(d.strip() for d in docs)
    if count(text) <= budget:
        return text, False
    spans = split_sentences(text)
    lo, hi = 0, len(spans)
    while lo < hi:  # binary search on the number of sentences kept
        mid = (lo + hi + 1) // 2
        end = spans[mid - 1].start + len(spans[mid - 1].text)
        lo, hi = (mid, hi) if count(text[:end]) <= budget else (lo, mid - 1)
    end = spans[lo - 1].start + len(spans[lo - 1].text) if lo else 0
    return text[:end], True


async def run_bench(config: Config, args: argparse.Namespace, backend: Any = None) -> dict[str, Any]:
    """Run the four methods; ``backend`` (tests) is used as given and left open."""
    from vivace.compression.cost import get_cost_model
    from vivace.retrieval.rag import build_messages, compress_context, make_compressor, format_context
    from vivace.retrieval.store import Store, iter_files, read_text
    from vivace.runtime import Call, complete, open_backend

    out_dir = Path(args.out)
    if args.corpus:
        corpus = Path(args.corpus)
        if not args.questions:
            raise InputError("--corpus needs --questions FILE.jsonl")
        qfile = Path(args.questions)
    else:
        from vivace_bench.synthetic import write_corpus

        corpus, generated = write_corpus(out_dir / "data")
        qfile = Path(args.questions) if args.questions else generated
    questions = load_questions(qfile)[: max(1, args.limit)]
    docs = [t for f in iter_files([corpus]) if (t := read_text(f)) and t.strip()]
    if not docs:
        raise InputError(f"empty corpus: no UTF-8 text files in {corpus}")
    store = Store(config)
    import hashlib

    # Chunk ids include the source path, so the name covers both: one corpus, one collection.
    digest = hashlib.sha256("\x00".join([str(corpus.resolve()), *docs]).encode()).hexdigest()[:12]
    collection = "vivace-bench-" + digest
    ingest = store.ingest([corpus], collection)
    k = args.k or config.retrieval_k

    owned = backend is None
    backend = backend or await open_backend(config)
    try:
        comp = make_compressor(backend, config)
        cost = await get_cost_model(backend, config.home, comp)
        template_tokens = await backend.count_tokens(build_messages(max((q["question"] for q in questions), key=len), ""))
        budget = backend.context_length - args.answer_tokens - template_tokens - 24
        stuffed, truncated = _fit_corpus(docs, comp.count, budget)
        rng = random.Random(time.monotonic_ns())
        methods = [m for m in METHODS if m in getattr(args, "methods", METHODS)]
        penalty = getattr(args, "repetition_penalty", None) or config.repetition_penalty
        rows: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
        for qi, q in enumerate(questions):
            for method in methods:
                t0 = time.perf_counter()
                info: dict[str, Any] = {}
                if method.startswith("rag"):
                    chunks = store.retrieve(q["question"], k, collection)
                    context = format_context(chunks)
                else:
                    context = stuffed
                if method.endswith("compress"):
                    context, info = await compress_context(
                        context, q["question"], config, backend, mode=args.compression, cost_model=cost
                    )
                overhead = time.perf_counter() - t0
                messages = build_messages(q["question"], context)
                messages[0] = {"role": "system", "content": f"[{rng.randrange(16**8):08x}] " + messages[0]["content"]}
                result = await complete(
                    backend,
                    Call(messages, max_tokens=args.answer_tokens, temperature=config.temperature,
                         repetition_penalty=penalty, tag=f"bench-context:{method}"),
                )
                gold = q["answer"].lower()
                rows[method].append({
                    "question": q["question"], "answer": result.text.strip(), "gold": q["answer"],
                    "correct": gold in result.text.lower(), "gold_in_context": gold in context.lower(),
                    "prompt_tokens": result.prompt_tokens, "cached_tokens": result.cached_tokens,
                    "engine_ttft_s": result.ttft_s, "ttft_s": overhead + result.ttft_s,
                    "latency_s": overhead + result.e2e_s, "overhead_s": overhead,
                    "truncated": truncated and not method.startswith("rag"), "compression": info,
                })
                log.info("q%d %s: %.2fs ttft, correct=%s", qi, method, overhead + result.ttft_s, rows[method][-1]["correct"])
        probe = None if args.no_probe else await _probe(questions, corpus, comp)
    finally:
        if owned:
            await backend.aclose()
    from vivace_bench.backend_bench import machine_info

    summary = {m: summarize(rows[m]) for m in methods}
    report = {
        "bench": "context",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "methods": summary,
        "n": len(questions),
        "targets": _targets(summary, probe) if len(summary) == len(METHODS) else None,
        "probe_2x": probe,
        "setup": {
            "backend": backend.name, "model": backend.model, "context_length": backend.context_length,
            "corpus": str(corpus), "questions": str(qfile), "docs": len(docs), "chunks": ingest.chunks,
            "corpus_tokens": comp.count("\n\n".join(docs)), "stuff_tokens": comp.count(stuffed),
            "stuff_truncated": truncated, "k": k, "chunk_tokens": config.chunk_tokens,
            "answer_tokens": args.answer_tokens, "compression_mode": args.compression,
            "repetition_penalty": penalty, "temperature": config.temperature,
            "cost_model": cost.to_json(),
        },
        "calls": rows,
    }
    write_report(out_dir, report)
    return report


async def _probe(questions: list[dict[str, str]], corpus: Path, comp: Any) -> dict[str, Any]:
    """Gold retention of fine and coarse compression at 2x on each question's source document."""
    import asyncio

    from vivace.retrieval.store import iter_files, read_text

    texts = {f.name: read_text(f) or "" for f in iter_files([corpus])}
    out: dict[str, Any] = {}
    for method in ("fine", "coarse"):
        kept, secs, ratios = [], [], []
        for q in questions:
            doc = texts.get(q.get("source", "")) or next((t for t in texts.values() if q["answer"] in t), "")
            if not doc:
                continue
            budget = max(1, comp.count(doc) // 2)
            text, st = await asyncio.to_thread(comp.compress, doc, q["question"], budget, method)
            kept.append(float(q["answer"].lower() in text.lower()))
            secs.append(st.seconds)
            ratios.append(st.ratio)
        out[method] = {"gold_kept_rate": _mean(kept), "ratio_mean": _mean(ratios), "seconds_median": _median(secs), "n": len(kept)}
    return out


def _targets(m: dict[str, dict[str, Any]], probe: dict[str, Any] | None) -> dict[str, Any]:
    def ratio(a: Any, b: Any) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    speed = ratio(m["stuff"]["ttft_median_s"], m["rag"]["ttft_median_s"])
    auto_rag = ratio(m["rag_compress"]["latency_median_s"], m["rag"]["latency_median_s"])
    auto_stuff = ratio(m["stuff_compress"]["latency_median_s"], m["stuff"]["latency_median_s"])
    fine = (probe or {}).get("fine", {}).get("gold_kept_rate")
    acc_rag, acc_stuff = m["rag"]["accuracy"] or 0.0, m["stuff"]["accuracy"] or 0.0
    return {
        "rag_ttft_speedup_vs_stuff": speed,
        "rag_ttft_20x": bool(speed and speed >= 20),
        "rag_accuracy_ok": acc_rag >= 0.6 and acc_rag >= acc_stuff,
        "auto_latency_ratio_rag": auto_rag,
        "auto_latency_ratio_stuff": auto_stuff,
        "auto_within_5pct": all(r is not None and r <= 1.05 for r in (auto_rag, auto_stuff)),
        "fine_2x_gold_kept": fine,
        "fine_2x_90pct": fine is not None and fine >= 0.9,
    }
