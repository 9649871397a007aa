"""NLI zero-shot label scores, shared by tags (its NLI option) and classify (caller labels).

What transformers' zero-shot-classification pipeline does: premise = chunk, hypothesis =
the template filled with a label ("This example is {}."), one NLI forward per
(chunk, label) pair. ``multi_label=True`` scores each label on its own, softmax over
(contradiction, entailment) -> P(entailment); ``multi_label=False`` is a softmax of the
entailment logits across the labels.

Enabled with ``DOCBATCH_MODELS__TAGS__PARAMS='{"nli_model": "facebook/bart-large-mnli"}'``
(or ``__CLASSIFY__``; a hub id with ``nli_revision``, or a local path).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from docbatch.schema.errors import ModelUnavailable, PermanentError
from docbatch.schema.text_checks import template_problem
from docbatch.worker.handlers.base import is_hub_id
from docbatch.worker.handlers.seq2seq import torch_dtype

HYPOTHESIS = "This example is {}."


def check_template(template: str) -> None:
    """The template must place the label exactly once: "This text is about {}.". Checked
    again here (the api checked it at submit) before any ``str.format`` of it."""
    problem = template_problem(template)
    if problem:
        raise PermanentError(f"hypothesis template {template[:200]!r} {problem}")


def fill(template: str, label: str) -> str:
    check_template(template)
    return template.format(label)


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
        self.path = path
        self.device = device
        self.template = template
        ids = {str(v).lower(): int(k) for k, v in model.config.id2label.items()}
        if "entailment" not in ids or "contradiction" not in ids:
            raise ModelUnavailable(
                f"{path} is not an NLI model: its labels are {sorted(ids)}, "
                "expected entailment and contradiction"
            )
        self.entail, self.contra = ids["entailment"], ids["contradiction"]

    def pair_logits(
        self, chunks: list[str], labels: list[str], template: str | None = None, rows: int = 64
    ) -> np.ndarray:
        """(contradiction, entailment) logits per (chunk, label): ``[chunks, labels, 2]``."""
        import torch

        hypothesis = template or self.template
        pairs = [(c, fill(hypothesis, label)) for c in chunks for label in labels]
        out: list[np.ndarray] = []
        for i in range(0, len(pairs), rows):
            part = pairs[i : i + rows]
            enc = self.tokenizer(
                [p for p, _ in part], [h for _, h in part], padding=True, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                logits = self.model(**enc).logits.float()
            out.append(logits[:, [self.contra, self.entail]].cpu().numpy())
        flat = np.concatenate(out) if out else np.zeros((0, 2), dtype=np.float32)
        return flat.reshape(len(chunks), len(labels), 2).astype(np.float32)

    def scores(
        self,
        chunks: list[str],
        labels: list[str],
        multi_label: bool = True,
        template: str | None = None,
    ) -> np.ndarray:
        """Label scores for every chunk: shape ``[len(chunks), len(labels)]``."""
        logits = self.pair_logits(chunks, labels, template)
        if multi_label:
            two = np.exp(logits - logits.max(axis=-1, keepdims=True))
            return np.asarray(two[..., 1] / two.sum(axis=-1), dtype=np.float32)
        entail = logits[..., 1]
        e = np.exp(entail - entail.max(axis=-1, keepdims=True))
        return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float32)

    def hypothesis_tokens(self, labels: list[str], template: str | None = None) -> int:
        """Tokens of the longest hypothesis plus the pair's special tokens."""
        hypothesis = template or self.template
        longest = max(
            len(self.tokenizer(fill(hypothesis, label), add_special_tokens=False)["input_ids"])
            for label in labels
        )
        return longest + len(self.tokenizer("", "", add_special_tokens=True)["input_ids"])

    def scores_batched(
        self, chunks: list[str], labels: list[str], budget: int, max_rows: int
    ) -> np.ndarray:
        """``scores`` for many chunks: every pair once, length-sorted token-budget batches."""
        import torch

        from docbatch.worker.batching import plan_batches

        pairs = [(c, fill(self.template, label)) for c in chunks for label in labels]
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


def nli_hub_models(params: dict[str, Any]) -> list[tuple[str, str]]:
    """The NLI model ``load_nli`` loads from the hub for ``params``, if any."""
    path = str(params.get("nli_model") or "")
    return [(path, str(params.get("nli_revision") or "main"))] if is_hub_id(path) else []


def load_nli(params: dict[str, Any], device: str, dtype: str) -> NliScorer | None:
    path = params.get("nli_model")
    if not path:
        return None
    template = str(params.get("nli_hypothesis", HYPOTHESIS))
    return NliScorer(str(path), params.get("nli_revision"), device, dtype, template)
