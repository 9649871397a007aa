"""Optional NLI zero-shot label scores for tags (what transformers' zero-shot pipeline does
with ``multi_label=True``): premise = chunk, hypothesis = "This example is {label}.",
score = softmax over (contradiction, entailment) -> P(entailment).

Enabled with ``DOCBATCH_MODELS__TAGS__PARAMS='{"nli_model": "facebook/bart-large-mnli"}'``
(a hub id with ``nli_revision``, or a local path). Chunks are cut for the embedding model
(256 tokens for MiniLM), well inside NLI models' limits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from schema.errors import ModelUnavailable
from worker.handlers.seq2seq import torch_dtype

HYPOTHESIS = "This example is {}."


class NliScorer:
    def __init__(
        self, path: str, revision: str | None, device: str, dtype: str, template: str = HYPOTHESIS
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision or None)
            model = AutoModelForSequenceClassification.from_pretrained(
                path, revision=revision or None, dtype=torch_dtype(dtype, device)
            )
        except OSError as exc:
            raise ModelUnavailable(f"cannot load NLI model {path!r}: {exc}") from exc
        self.model = model.to(device).eval()
        self.device = device
        self.template = template
        ids = {str(v).lower(): int(k) for k, v in model.config.id2label.items()}
        if "entailment" not in ids or "contradiction" not in ids:
            raise ModelUnavailable(
                f"{path} is not an NLI model: its labels are {sorted(ids)}, "
                "expected entailment and contradiction"
            )
        self.entail, self.contra = ids["entailment"], ids["contradiction"]

    def scores(self, chunks: list[str], labels: list[str], rows: int = 64) -> np.ndarray:
        """P(entailment) for every (chunk, label): shape ``[len(chunks), len(labels)]``."""
        import torch

        pairs = [(c, self.template.format(label)) for c in chunks for label in labels]
        out: list[float] = []
        for i in range(0, len(pairs), rows):
            part = pairs[i : i + rows]
            enc = self.tokenizer(
                [p for p, _ in part], [h for _, h in part], padding=True, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                logits = self.model(**enc).logits.float()
            two = logits[:, [self.contra, self.entail]].softmax(dim=-1)[:, 1]
            out.extend(two.cpu().tolist())
        return np.asarray(out, dtype=np.float32).reshape(len(chunks), len(labels))

    def scores_batched(
        self, chunks: list[str], labels: list[str], budget: int, max_rows: int
    ) -> np.ndarray:
        """``scores`` for many chunks: every pair once, length-sorted token-budget batches."""
        import torch

        from worker.batching import plan_batches

        pairs = [(c, self.template.format(label)) for c in chunks for label in labels]
        if not pairs:
            return np.zeros((len(chunks), len(labels)), dtype=np.float32)
        enc = self.tokenizer([p for p, _ in pairs], [h for _, h in pairs], truncation=True)
        ids = [dict(zip(enc.keys(), row, strict=True)) for row in zip(*enc.values(), strict=True)]
        out = np.empty(len(pairs), dtype=np.float32)
        for batch in plan_batches([len(r["input_ids"]) for r in ids], budget, max_rows):
            padded = self.tokenizer.pad([ids[i] for i in batch], return_tensors="pt")
            with torch.inference_mode():
                logits = self.model(**padded.to(self.device)).logits.float()
            two = logits[:, [self.contra, self.entail]].softmax(dim=-1)[:, 1]
            out[batch] = two.cpu().numpy()
        return out.reshape(len(chunks), len(labels))


def load_nli(params: dict[str, Any], device: str, dtype: str) -> NliScorer | None:
    path = params.get("nli_model")
    if not path:
        return None
    template = str(params.get("nli_hypothesis", HYPOTHESIS))
    return NliScorer(str(path), params.get("nli_revision"), device, dtype, template)
