"""Abstractive map-reduce: the reduce rounds of a unit's documents run batched together
(``prepare_reduce``) and give exactly what each document's own reduce gives."""

from __future__ import annotations

from typing import Any

from docbatch.schema.settings import GenerationConfig, ModelConfig
from docbatch.worker.handlers.abstractive import AbstractiveSummarizeHandler
from docbatch.worker.model_stage import compute_unit
from tests.fixtures import load_corpus
from tests.tiny_models import tiny_models  # noqa: F401 - session fixture

GREEDY = GenerationConfig(num_beams=1, max_new_tokens=12, min_new_tokens=4)


class CountingBart(AbstractiveSummarizeHandler):
    """The real handler, counting generate calls made by reduce (after the map step)."""

    def setup(self, device: str) -> None:
        super().setup(device)
        self.calls = 0

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        self.calls += 1
        return super().predict(chunks, params)


def test_batched_fold_equals_per_document_fold(tiny_models):  # noqa: F811
    handler = CountingBart(ModelConfig(model=tiny_models["bart"], generation=GREEDY))
    handler.setup("cpu")
    docs = load_corpus("stdlib-docs.jsonl", 10) + load_corpus("licenses.jsonl", 1)
    documents = [(i, d["custom_id"], d["text"]) for i, d in enumerate(docs)]

    handler.calls = 0
    outcome = compute_unit(handler, documents, {}, lambda: False, job_id="j", unit_id=1)
    batched_calls = handler.calls
    rows = {r["document_id"]: r for r in outcome.rows}
    assert all(r["status"] == "succeeded" for r in rows.values()), rows

    per_doc_calls = 0
    folded = 0
    for i, _cid, text in documents:
        chunks = handler.chunk_for(text, {})
        outputs = handler.predict([c.text for c in chunks], {})
        handler._folded = {}  # no unit-wide pass: reduce folds this document alone
        handler.calls = 0
        alone = handler.reduce(text, chunks, outputs, {}).data
        per_doc_calls += handler.calls
        folded += alone["rounds"] > 1
        assert rows[i]["output"]["summary"] == alone["summary"], i
        assert rows[i]["output"]["rounds"] == alone["rounds"], i
    assert folded >= 5  # most documents needed a reduce round; the license several
    assert max(r["output"]["rounds"] for r in rows.values()) >= 3
    # Map batches plus one set of batches per round for the whole unit, versus a model
    # call per document and round.
    assert batched_calls < per_doc_calls
