"""tags with an NLI zero-shot model: a tiny random BERT classifier on MiniLM's tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from docbatch.schema.settings import ModelConfig
from docbatch.worker.handlers.tags import TagsHandler
from tests.fixtures import load_corpus

pytestmark = pytest.mark.fast

LABELS = ["networking", "file system", "text processing"]


@pytest.fixture(scope="module")
def tiny_nli(tmp_path_factory) -> str:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from docbatch.worker.handlers.minilm import bundled_minilm_path

    out = tmp_path_factory.mktemp("tiny-nli")
    tok = AutoTokenizer.from_pretrained(bundled_minilm_path())
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label={0: "contradiction", 1: "neutral", 2: "entailment"},
        label2id={"contradiction": 0, "neutral": 1, "entailment": 2},
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def test_nli_scores_equal_direct_model_calls(tiny_nli):
    torch.set_num_threads(1)
    handler = TagsHandler(ModelConfig(params={"nli_model": tiny_nli}))
    handler.setup("cpu")
    params = {"labels": LABELS, "top_k": 3}
    doc = load_corpus("licenses.jsonl", 1)[0]["text"][:4000]
    chunks = handler.chunk_for(doc, params)
    assert len(chunks) > 1
    out = handler.reduce(doc, chunks, handler.predict([c.text for c in chunks], params), params)
    assert out.data["source"] == "labels+nli"
    tags = out.data["tags"]
    assert [t["score"] for t in tags] == sorted((t["score"] for t in tags), reverse=True)

    nli = handler.nli
    assert nli is not None
    for t in tags:
        direct = []
        for c in chunks:  # one (premise, hypothesis) pair at a time, no padding
            enc = nli.tokenizer(c.text, f"This example is {t['label']}.", return_tensors="pt")
            with torch.inference_mode():
                logits = nli.model(**enc).logits[0]
            direct.append(float(logits[[0, 2]].softmax(-1)[1]))
        assert abs(t["score"] - max(direct)) < 1e-4, (t, direct)
        assert 0.0 <= t["similarity"] <= 1.0
    assert np.isfinite([t["score"] for t in tags]).all()
