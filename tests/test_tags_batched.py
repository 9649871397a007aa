"""Keyphrase tags through the runner (candidates of the whole unit encoded together, each
distinct phrase once) equal the per-document path (each document's 64 candidates encoded
on their own inside ``reduce``), with far fewer phrase encodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from docbatch.schema.settings import ModelConfig
from docbatch.worker.handlers.tags import TagsHandler, candidate_phrases
from docbatch.worker.model_stage import compute_unit
from tests.fixtures import load_corpus
from tests.test_tags_nli import LABELS, tiny_nli  # noqa: F401 - the tiny NLI model fixture


class CountingTags(TagsHandler):
    """The real handler, counting the texts it sends to the model outside ``predict``."""

    def setup(self, device: str) -> None:
        super().setup(device)
        self.encoded_phrases = 0
        self._in_predict = False

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        self._in_predict = True
        try:
            return super().predict(chunks, params)
        finally:
            self._in_predict = False

    def encode(self, texts: list[str]) -> np.ndarray:
        if not self._in_predict:
            self.encoded_phrases += len(texts)
        return super().encode(texts)


@pytest.fixture(scope="module")
def handler() -> CountingTags:
    torch.set_num_threads(1)
    h = CountingTags(ModelConfig())
    h.setup("cpu")
    return h


def _per_document(handler: TagsHandler, text: str, params: dict[str, Any]) -> dict[str, Any]:
    handler.clear_phrase_cache()  # nothing cached: reduce encodes this document's own
    chunks = handler.chunk_for(text, params)
    outputs = handler.predict([c.text for c in chunks], params)
    return handler.reduce(text, chunks, outputs, params).data


def test_batched_keyphrases_equal_per_document_path(handler):
    docs = load_corpus("stdlib-docs.jsonl", 24)
    documents = [(i, d["custom_id"], d["text"]) for i, d in enumerate(docs)]
    params = {"top_k": 5}

    handler.clear_phrase_cache()
    handler.encoded_phrases = 0
    outcome = compute_unit(handler, documents, params, lambda: False, job_id="j", unit_id=1)
    batched_encodes = handler.encoded_phrases
    # A later unit with the same phrases finds them in the worker's cache.
    handler.encoded_phrases = 0
    again = compute_unit(handler, documents[:6], params, lambda: False, job_id="j", unit_id=3)
    assert handler.encoded_phrases == 0
    assert [r["output"] for r in again.rows] == [r["output"] for r in outcome.rows[:6]]
    by_doc = {r["document_id"]: r for r in outcome.rows}
    assert len(by_doc) == len(docs)
    assert all(r["status"] == "succeeded" for r in by_doc.values())

    handler.encoded_phrases = 0
    per_doc = {i: _per_document(handler, text, params) for i, _cid, text in documents}
    per_doc_encodes = handler.encoded_phrases

    for i, expected in per_doc.items():
        got = by_doc[i]["output"]
        assert got["source"] == expected["source"] == "keyphrases"
        assert [t["label"] for t in got["tags"]] == [t["label"] for t in expected["tags"]], i
        for a, b in zip(got["tags"], expected["tags"], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-3)

    distinct = {p for _i, _c, text in documents for p in candidate_phrases(text)}
    assert batched_encodes == len(distinct)  # each distinct phrase of the unit once
    assert per_doc_encodes == sum(len(candidate_phrases(t)) for _i, _c, t in documents)
    assert batched_encodes < per_doc_encodes


def test_failed_prepare_reduce_falls_back_to_per_document(handler, monkeypatch):
    """The second pass is an optimisation: if it breaks, reduce still gives the results."""
    docs = load_corpus("stdlib-docs.jsonl", 3)
    documents = [(i, d["custom_id"], d["text"]) for i, d in enumerate(docs)]

    def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(handler, "encode_batched", broken)
    handler.clear_phrase_cache()
    outcome = compute_unit(handler, documents, {}, lambda: False, job_id="j", unit_id=2)
    assert [r["status"] for r in outcome.rows] == ["succeeded"] * 3
    for (_i, _cid, text), r in zip(documents, outcome.rows, strict=True):
        assert r["output"]["tags"] == _per_document(handler, text, {})["tags"]


def test_batched_nli_label_scores_equal_per_document_path(tiny_nli):  # noqa: F811
    """With an NLI model, the unit's (chunk, label) pairs are scored in one batched pass;
    every document's tags equal what its own reduce computes."""
    handler = TagsHandler(ModelConfig(params={"nli_model": tiny_nli}))
    handler.setup("cpu")
    params = {"labels": LABELS, "top_k": 3}
    docs = load_corpus("licenses.jsonl", 2) + load_corpus("stdlib-docs.jsonl", 6)
    documents = [(i, d["custom_id"], d["text"][:3000]) for i, d in enumerate(docs)]
    outcome = compute_unit(handler, documents, params, lambda: False, job_id="j", unit_id=4)
    assert len(handler._unit_nli) == len({t for _i, _c, t in documents})
    for (_i, _cid, text), r in zip(documents, outcome.rows, strict=True):
        assert r["status"] == "succeeded"
        expected = _per_document(handler, text, params)
        got = r["output"]
        assert got["source"] == expected["source"] == "labels+nli"
        assert {t["label"]: t["score"] for t in got["tags"]} == pytest.approx(
            {t["label"]: t["score"] for t in expected["tags"]}, abs=2e-4
        )
