"""Chunking covers every character and respects the model limit; batching packs by tokens."""

from __future__ import annotations

import pytest

from tests.fixtures import load_corpus
from worker.batching import plan_batches
from worker.chunking import chunk_text, count_tokens, coverage


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from worker.handlers.minilm import bundled_minilm_path

    return AutoTokenizer.from_pretrained(bundled_minilm_path())


@pytest.mark.parametrize("doc", load_corpus("licenses.jsonl"), ids=lambda d: d["custom_id"])
def test_long_document_fully_covered_and_within_limit(tokenizer, doc):
    text = doc["text"]
    limit = 254  # MiniLM: 256 positions minus [CLS] and [SEP]
    chunks = chunk_text(text, tokenizer, limit)
    assert count_tokens(text, tokenizer) > limit  # really long
    assert coverage(text, chunks) == 1.0
    assert "".join(c.text for c in chunks) == text
    assert all(c.start < c.end for c in chunks)
    assert [c.start for c in chunks[1:]] == [c.end for c in chunks[:-1]]
    for c in chunks:
        assert count_tokens(c.text, tokenizer) <= limit
        full = tokenizer(c.text)["input_ids"]  # with special tokens: what the model sees
        assert len(full) <= 256


def test_short_text_is_one_chunk(tokenizer):
    chunks = chunk_text("Hello world. Short text.", tokenizer, 254)
    assert len(chunks) == 1 and chunks[0].text == "Hello world. Short text."


def test_a_sentence_longer_than_the_limit_is_cut_between_tokens(tokenizer):
    text = " ".join(f"word{i}" for i in range(600))  # no sentence boundary at all
    chunks = chunk_text(text, tokenizer, 50)
    assert "".join(c.text for c in chunks) == text
    assert all(count_tokens(c.text, tokenizer) <= 50 for c in chunks)


def test_batches_respect_budget_and_sort_by_length():
    lengths = [5, 300, 7, 280, 10, 12, 250]
    batches = plan_batches(lengths, budget=600)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        if len(b) > 1:
            assert max(lengths[i] for i in b) * len(b) <= 600
    # longest first, and neighbours in length share a batch
    assert batches[0] == [1, 3]


def test_batch_rows_cap_and_oversized_row():
    assert plan_batches([10] * 10, budget=10_000, max_rows=4) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]
    assert plan_batches([5000, 3], budget=100) == [[0], [1]]


def test_sentences_do_not_end_at_abbreviations():
    from worker.chunking import sentence_spans

    text = "Use a codec (e.g. gzip) here.  The table is driven. Ask J. Smith. Done!"
    pieces = [text[a:b] for a, b in sentence_spans(text)]
    assert pieces == [
        "Use a codec (e.g. gzip) here.  ",
        "The table is driven. ",
        "Ask J. Smith. ",
        "Done!",
    ]
