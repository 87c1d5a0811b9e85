"""A synthetic long-context QA corpus: fictional towns whose facts no model can know.

Why synthetic: a model's prior knowledge would inflate accuracy, so every
answer is invented (names, years, rivers) and appears once in the corpus.
Every document uses the same fact templates, so retrieval has to match the
town's name, not the template. Deterministic for a seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

_SYL_A = "Quen Mar Vel Tor Bram Ost Hal Kel Dun Fen Lor Sab Wyn Ced Ral Gor Pel Tam Ysk Ner Orv Zan".split()
_SYL_B = "low wick mere holt stead ford bury vale moor brook crest haven dale field gate shaw thorpe wood".split()
_FIRST = "Bertrand Idris Maelis Oswin Tamsin Corvin Elske Harrow Jorun Liesel Piet Rosalind Sefton Ulla Wendel Yara Anselm Brisa Dorran Ferda".split()
_LAST = "Olsk Vantope Quarrel Demmick Fairweather Stroud Holloway Pendry Marsk Ivers Calloway Thorne Brisk Aldane Mercer Vossel Kettering Harlan Sorrow Bexley".split()
_FILLER = (
    "The streets of {t} are narrow and paved with grey stone that shines after rain.",
    "Most families in {t} keep a small garden behind the house, where they grow beans and onions.",
    "In the evenings people gather in the square to talk about the weather and the harvest.",
    "The winters are long and damp, and the summers are short but bright.",
    "A weekly market sells bread, cheese, wool, and tools made by local smiths.",
    "Travellers often stop in {t} on their way to the coast and stay for a night or two.",
    "The old bridge was repaired many times, and each generation added its own stones.",
    "Children learn to swim in the shallow bends of the water when the weather is warm.",
    "There is a small library that lends books, maps, and almanacs to anyone who asks.",
    "The people of {t} are known for their patience and for their long, slow dinners.",
    "Fog often covers the fields in the early morning and lifts before noon.",
    "A bell in the central tower rings every hour from dawn until dusk.",
    "Many houses have blue shutters, a custom that nobody can fully explain.",
    "The roads around {t} are quiet, and carts move slowly along them.",
)
QUESTION_KINDS = ("founder", "year", "mayor", "river", "twin")


@dataclass
class Town:
    name: str
    founder: str
    year: str
    mayor: str
    river: str
    twin: str

    def document(self, rng: random.Random, filler_sentences: int) -> str:
        facts = [
            f"The town of {self.name} was founded in the year {self.year}.",
            f"The founder of {self.name} was a trader named {self.founder}.",
            f"The current mayor of {self.name} is {self.mayor}.",
            f"{self.name} lies on the banks of the river {self.river}.",
            f"The twin town of {self.name} is {self.twin}, far to the south.",
        ]
        filler = [s.format(t=self.name) for s in rng.sample(_FILLER, k=min(filler_sentences, len(_FILLER)))]
        body = filler[:]
        for fact in facts:
            body.insert(rng.randrange(len(body) + 1), fact)
        half = len(body) // 2
        return f"# {self.name}\n\n" + " ".join(body[:half]) + "\n\n" + " ".join(body[half:]) + "\n"

    def qa(self, kind: str) -> tuple[str, str]:
        return {
            "founder": (f"Who founded the town of {self.name}?", self.founder),
            "year": (f"In what year was the town of {self.name} founded?", self.year),
            "mayor": (f"Who is the current mayor of {self.name}?", self.mayor),
            "river": (f"On which river does {self.name} lie?", self.river),
            "twin": (f"What is the twin town of {self.name}?", self.twin),
        }[kind]


def _names(rng: random.Random, n: int, make: Callable[[], str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        name = make()
        if name not in out:
            out.append(name)
    return out


def make_corpus(docs: int = 24, seed: int = 0, filler_sentences: int = 11) -> tuple[dict[str, str], list[dict[str, str]]]:
    """``{file name: text}`` and one question per document, with gold answers and sources."""
    rng = random.Random(seed)
    places = _names(rng, docs * 3, lambda: rng.choice(_SYL_A) + rng.choice(_SYL_B))
    people = _names(rng, docs * 2, lambda: f"{rng.choice(_FIRST)} {rng.choice(_LAST)}")
    years = rng.sample(range(1512, 1899), docs)
    towns = [
        Town(places[i], people[2 * i], str(years[i]), people[2 * i + 1], places[docs + i], places[2 * docs + i])
        for i in range(docs)
    ]
    files = {f"{i:02d}-{t.name.lower()}.md": t.document(rng, filler_sentences) for i, t in enumerate(towns)}
    questions = []
    for i, (fname, town) in enumerate(zip(files, towns)):
        q, a = town.qa(QUESTION_KINDS[i % len(QUESTION_KINDS)])
        questions.append({"question": q, "answer": a, "source": fname})
    return files, questions


def write_corpus(folder: Path, docs: int = 24, seed: int = 0) -> tuple[Path, Path]:
    """Write the corpus as markdown files and the questions as JSONL; return both paths."""
    files, questions = make_corpus(docs, seed)
    corpus = folder / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (corpus / name).write_text(text)
    qfile = folder / "questions.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return corpus, qfile
