"""Tiny random BERT heads (sequence/token classification, QA, NLI) on MiniLM's WordPiece.

Weights are drawn with a large ``initializer_range`` so that outputs depend on the input
(a near-zero random head gives the same scores for every text). Saved with
``save_pretrained`` so the handlers load them through the real ``from_pretrained`` path.

    >>> paths = build_heads(Path("/tmp/heads"))
    >>> paths["ner"]
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
# MiniLM-L6's shape: what the benchmarks time (tiny models are all overhead).
MINILM = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
}


def _config(vocab: int, size: dict[str, int], **kw: object) -> object:
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab, initializer_range=0.5, **size, **kw)


def build_heads(root: Path, size: dict[str, int] | None = None) -> dict[str, str]:
    """Build (once) and return paths: sst (2-label softmax), multi (3-label sigmoid),
    ner (BIO token classifier), qa, nli, and bert (a bare BertModel: the wrong architecture
    for every head)."""
    import torch
    from transformers import (
        AutoTokenizer,
        BertForQuestionAnswering,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertModel,
    )

    from docbatch.worker.handlers.minilm import bundled_minilm_path

    size = size or TINY
    done = root / "built.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    tok = AutoTokenizer.from_pretrained(bundled_minilm_path())
    v = tok.vocab_size

    def labels(names: list[str]) -> dict[str, object]:
        return {
            "num_labels": len(names),
            "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)},
        }

    models = {
        "sst": lambda: BertForSequenceClassification(
            _config(v, size, **labels(["NEGATIVE", "POSITIVE"]))
        ),
        "multi": lambda: BertForSequenceClassification(
            _config(
                v,
                size,
                problem_type="multi_label_classification",
                **labels(["sports", "politics", "tech"]),
            )
        ),
        "ner": lambda: BertForTokenClassification(_config(v, size, **labels(NER_LABELS))),
        "qa": lambda: BertForQuestionAnswering(_config(v, size)),
        "nli": lambda: BertForSequenceClassification(
            _config(v, size, **labels(["contradiction", "neutral", "entailment"]))
        ),
        "bert": lambda: BertModel(_config(v, size)),
    }
    paths = {}
    for i, (name, make) in enumerate(models.items()):
        torch.manual_seed(i)
        model = make()
        out = root / name
        model.save_pretrained(out)
        tok.save_pretrained(out)
        paths[name] = str(out)
    done.write_text(json.dumps(paths))
    return paths


@pytest.fixture(scope="session")
def tiny_heads() -> dict[str, str]:
    import hashlib

    import torch

    from tests.fixtures import ARTIFACTS

    torch.set_num_threads(1)
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return build_heads(ARTIFACTS / f"tiny-heads-{digest}")
