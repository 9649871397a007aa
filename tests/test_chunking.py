"""Chunking covers every character and respects the model limit; batching packs by tokens."""

from __future__ import annotations

import pytest

from docbatch.worker.batching import plan_batches
from docbatch.worker.chunking import chunk_text, count_tokens, coverage
from tests.fixtures import load_corpus

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from docbatch.worker.handlers.minilm import bundled_minilm_path

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


def test_batches_with_a_batch_cost_minimise_padding_plus_batches(tokenizer):
    """With a per-batch cost the plan is the cheapest within the budget (checked against
    every contiguous split of the length-sorted rows), and on a unit's mix of long and
    short rows it pads far less than filling each batch greedily."""
    import itertools
    import random

    def cost(batches, lengths, c):
        return sum(max(lengths[i] for i in b) * len(b) + c for b in batches)

    rng = random.Random(7)
    for _ in range(40):
        lengths = [rng.randint(1, 120) for _ in range(rng.randint(2, 9))]
        budget, rows, c = 300, 4, rng.choice([1, 8, 40])
        plan = plan_batches(lengths, budget, rows, batch_cost=c)
        assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
        assert all(len(b) <= rows for b in plan)
        assert all(len(b) == 1 or max(lengths[i] for i in b) * len(b) <= budget for b in plan)
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        splits = [_split(order, cuts) for cuts in itertools.product([0, 1], repeat=len(order) - 1)]
        cheapest = min(
            cost(split, lengths, c)
            for split in splits
            if all(
                len(b) <= rows and (len(b) == 1 or max(lengths[i] for i in b) * len(b) <= budget)
                for b in split
            )
        )
        assert cost(plan, lengths, c) == cheapest
    # A unit's sentences (the summarize chunks of 30 stdlib documents, ~340 rows).
    from docbatch.worker.chunking import sentence_spans

    text = " ".join(d["text"] for d in load_corpus("stdlib-docs.jsonl", 30))
    sentences = [text[a:b] for a, b in sentence_spans(text) if text[a:b].strip()]
    mixed = [min(256, len(ids)) for ids in tokenizer(sentences)["input_ids"]]
    greedy = plan_batches(mixed, 4096)
    exact = plan_batches(mixed, 4096, batch_cost=64)
    padded = [sum(max(mixed[i] for i in b) * len(b) for b in p) for p in (greedy, exact)]
    assert padded[1] < 0.85 * padded[0], padded


def _split(order, cuts):
    out, cur = [], [order[0]]
    for i, cut in zip(order[1:], cuts, strict=True):
        if cut:
            out.append(cur)
            cur = []
        cur.append(i)
    return [*out, cur]


def test_sentences_do_not_end_at_abbreviations():
    from docbatch.worker.chunking import sentence_spans

    text = "Use a codec (e.g. gzip) here.  The table is driven. Ask J. Smith. Done!"
    pieces = [text[a:b] for a, b in sentence_spans(text)]
    assert pieces == [
        "Use a codec (e.g. gzip) here.  ",
        "The table is driven. ",
        "Ask J. Smith. ",
        "Done!",
    ]
