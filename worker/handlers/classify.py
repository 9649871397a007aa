"""classify: any sequence-classification model, or zero-shot with the caller's labels.

- The model's own labels (``config.id2label``): softmax over them, or a sigmoid per label
  when ``config.problem_type`` is ``multi_label_classification`` (or the model has a
  single output), exactly as transformers' text-classification pipeline scores a text.
- Long documents: every chunk is scored; a document's score per label is the
  token-weighted mean over its chunks (``aggregate: "max"``: the best chunk's);
  ``chunk_scores: true`` adds the per-chunk scores.
- ``labels``: a subset of the model's labels restricts the output to them (scores are
  not renormalised). Other labels need an NLI model
  (``DOCBATCH_MODELS__CLASSIFY__PARAMS='{"nli_model": ...}'``) and are then scored by
  zero-shot entailment (``docbatch.worker.handlers.zeroshot``, shared with tags), with the
  ``hypothesis_template`` and ``multi_label`` of the task.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from docbatch.schema.errors import ModelUnavailable, PermanentError
from docbatch.worker.chunking import Chunk, chunk_text
from docbatch.worker.handlers.base import Output
from docbatch.worker.handlers.heads import HeadHandler, softmax, to_numpy
from docbatch.worker.handlers.zeroshot import (
    HYPOTHESIS,
    NliScorer,
    check_template,
    load_nli,
    nli_hub_models,
)

MULTI_LABEL = "multi_label_classification"


class ClassifyHandler(HeadHandler):
    task = "classify"
    default_model = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
    default_revision = "714eb0f"  # the revision transformers' own pipeline default pins
    auto_class = "AutoModelForSequenceClassification"
    arch_suffix = "ForSequenceClassification"

    def hub_models(self) -> list[tuple[str, str]]:
        return super().hub_models() + nli_hub_models(self.config.params)

    def setup(self, device: str) -> None:
        super().setup(device)
        self.nli: NliScorer | None = None
        self.nli_error = ""
        try:
            self.nli = load_nli(self.config.params, device, self.config.dtype)
        except PermanentError as exc:
            self.nli_error = f"{exc} (DOCBATCH_MODELS__CLASSIFY__PARAMS nli_model)"

    # -- which mode -------------------------------------------------------------------
    def zero_shot(self, params: dict[str, Any]) -> bool:
        labels = params.get("labels")
        if not labels:
            return False
        # The model's own labels restrict its output; any other label set is zero-shot.
        return self.model is None or not set(labels) <= set(self.id2label.values())

    def check_params(self, params: dict[str, Any]) -> None:
        labels = params.get("labels")
        if not self.zero_shot(params):
            super().check_params(params)
            return
        check_template(str(params.get("hypothesis_template", HYPOTHESIS)))
        if self.nli is None:
            own = f"; its own labels are {sorted(self.id2label.values())}" if self.model else ""
            raise PermanentError(
                f"labels {labels} are not labels of the classify model {self.model_id}{own}. "
                "For zero-shot classification with your own labels configure an NLI model: "
                'DOCBATCH_MODELS__CLASSIFY__PARAMS=\'{"nli_model": "facebook/bart-large-mnli"}\''
                + (f" ({self.nli_error})" if self.nli_error else "")
            )

    def describe_params(self, params: dict[str, Any]) -> dict[str, Any]:
        out = {**self.config.params, **params, "aggregate": params.get("aggregate", "mean")}
        if self.zero_shot(params):
            out["hypothesis_template"] = params.get("hypothesis_template", HYPOTHESIS)
            out["multi_label"] = bool(params.get("multi_label", False))
        return out

    def model_for(self, params: dict[str, Any]) -> tuple[str, str]:
        if self.zero_shot(params) and self.nli is not None:
            return self.nli.path, str(self.config.params.get("nli_revision") or "main")
        return self.model_id, self.revision

    # -- chunks -----------------------------------------------------------------------
    def chunk_for(self, text: str, params: dict[str, Any]) -> list[Chunk]:
        if self.zero_shot(params) and self.nli is not None:
            tok = self.nli.tokenizer
            limit = min(int(getattr(tok, "model_max_length", 512) or 512), 100_000)
            room = limit - self.nli.hypothesis_tokens(
                list(params["labels"]), params.get("hypothesis_template")
            )
            if self.config.max_input_tokens:
                room = min(room, self.config.max_input_tokens)
            return chunk_text(text, tok, max(8, room))
        if self.model is None:
            raise ModelUnavailable(self.load_error)
        return chunk_text(text, self.tokenizer, self.max_input_tokens)

    # -- the model --------------------------------------------------------------------
    @property
    def sigmoid(self) -> bool:
        cfg = self.model.config
        return getattr(cfg, "problem_type", None) == MULTI_LABEL or int(cfg.num_labels) == 1

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        if self.zero_shot(params):
            assert self.nli is not None  # check_params guarantees it
            scores = self.nli.scores(
                chunks,
                list(params["labels"]),
                multi_label=bool(params.get("multi_label", False)),
                template=params.get("hypothesis_template"),
            )
            return list(scores)
        enc = self.tokenizer(chunks, padding=True, truncation=True, return_tensors="pt")
        logits = to_numpy(self.forward(enc).logits)
        probs = 1.0 / (1.0 + np.exp(-logits)) if self.sigmoid else softmax(logits)
        return list(probs.astype(np.float32))

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        zero_shot = self.zero_shot(params)
        if zero_shot:
            names = list(params["labels"])
            keep = list(range(len(names)))
        else:
            labels = self.id2label
            names = [labels[i] for i in range(len(labels))]
            wanted = params.get("labels")
            keep = [i for i, n in enumerate(names) if not wanted or n in wanted]
        stack = np.stack(outputs).astype(np.float64)
        how = params.get("aggregate", "mean")
        if how == "max":
            doc = stack.max(axis=0)
        else:
            w = np.maximum(np.asarray([c.tokens for c in chunks], dtype=np.float64), 1.0)
            doc = (stack * w[:, None]).sum(axis=0) / w.sum()
        ranked = sorted(((names[i], float(doc[i])) for i in keep), key=lambda p: -p[1])
        top_k = params.get("top_k")
        if top_k:
            ranked = ranked[: int(top_k)]
        data: dict[str, Any] = {
            "label": ranked[0][0] if ranked else None,
            "scores": [{"label": n, "score": s} for n, s in ranked],
            "source": "zero-shot" if zero_shot else "model",
            "multi_label": bool(params.get("multi_label", False)) if zero_shot else self.sigmoid,
            "aggregate": how,
            "chunks": len(chunks),
        }
        if params.get("chunk_scores"):
            data["chunk_scores"] = [
                {
                    "start": c.start,
                    "end": c.end,
                    "tokens": c.tokens,
                    "scores": {names[i]: float(out[i]) for i in keep},
                }
                for c, out in zip(chunks, outputs, strict=True)
            ]
        return Output(data)
