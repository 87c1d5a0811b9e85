from vivace.retrieval.chunking import chunk_id, chunk_text, split_sentences


def words(text: str) -> int:
    return len(text.split())


def test_split_sentences_keeps_offsets() -> None:
    text = "# Title\n\nFirst one. Second one!  Third?\n- item one\n- item two"
    spans = split_sentences(text)
    assert [s.text for s in spans] == ["# Title", "First one.", "Second one!", "Third?", "- item one", "- item two"]
    for s in spans:
        assert text[s.start : s.start + len(s.text)] == s.text


def test_chunks_are_whole_sentences_within_budget_with_overlap() -> None:
    text = " ".join(f"Sentence number {i} has exactly seven words." for i in range(40))
    chunks = chunk_text(text, 30, 8, words)
    assert all(c.tokens <= 30 for c in chunks)
    assert all(c.text.endswith("words.") and c.text.startswith("Sentence") for c in chunks)
    # Overlap: each chunk starts with the previous chunk's last sentence.
    for a, b in zip(chunks, chunks[1:]):
        assert a.text.split(". ")[-1].rstrip(".") in b.text
    assert "Sentence number 39" in chunks[-1].text


def test_long_sentence_is_split_and_ids_are_content_hashes() -> None:
    text = "word " * 100
    chunks = chunk_text(text, 20, 0, words)
    assert len(chunks) == 5 and all(c.tokens <= 20 for c in chunks)
    assert chunk_id("a  b\nc") == chunk_id("a b c") != chunk_id("a b d")
