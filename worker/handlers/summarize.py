"""summarize, extractive: the sentences most central to the document.

Chunks are the document's sentences (long ones cut to the model limit); each is
embedded, and the sentences closest to the document's mean vector are returned in
document order. This is the offline default. ``SummarizeHandler`` (the summarize
worker's default handler) chooses per job between it and the abstractive seq2seq
handler (``docbatch.worker.handlers.abstractive``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from docbatch.schema.errors import ModelUnavailable
from docbatch.schema.settings import ModelConfig
from docbatch.worker.chunking import Chunk, chunk_text, sentence_spans
from docbatch.worker.handlers.abstractive import AbstractiveSummarizeHandler
from docbatch.worker.handlers.base import Handler, Output, UnitDocument
from docbatch.worker.handlers.minilm import SentenceEncoderHandler, pooled


class ExtractiveSummarizeHandler(SentenceEncoderHandler):
    task = "summarize"

    def chunk(self, text: str) -> list[Chunk]:
        out: list[Chunk] = []
        for s, e in sentence_spans(text):
            for c in chunk_text(text[s:e], self.tokenizer, self.max_input_tokens):
                out.append(Chunk(s + c.start, s + c.end, c.text, c.tokens))
        return out

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        k = int(params.get("max_sentences", 3))
        keep = [i for i, c in enumerate(chunks) if c.text.strip()]
        if len(keep) <= k:
            chosen = keep
        else:
            center = pooled([outputs[i] for i in keep], [chunks[i].tokens for i in keep])
            scores = np.stack([outputs[i] for i in keep]) @ center
            chosen = sorted(keep[j] for j in np.argsort(-scores)[:k])
        summary = " ".join(" ".join(chunks[i].text.split()) for i in chosen)
        spans = [{"start": chunks[i].start, "end": chunks[i].end} for i in chosen]
        return Output(
            {"summary": summary, "method": "extractive", "sentences": chosen, "spans": spans}
        )


class SummarizeHandler(Handler):
    """The summarize worker's handler: extractive (MiniLM) or abstractive (seq2seq).

    ``params["method"]``: ``extractive``; ``abstractive`` (needs
    DOCBATCH_MODELS__SUMMARIZE__MODEL, else those documents fail saying so); ``auto``
    (the default): abstractive when a model is configured, else extractive. The
    extractive side always uses the bundled MiniLM; the registry's model, revision,
    dtype and generation settings belong to the abstractive side.
    """

    task = "summarize"
    default_model = AbstractiveSummarizeHandler.default_model

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.extractive = ExtractiveSummarizeHandler(
            ModelConfig(batch_tokens=config.batch_tokens, max_batch_rows=config.max_batch_rows)
        )
        self.abstractive = AbstractiveSummarizeHandler(config) if config.model else None

    def hub_models(self) -> list[tuple[str, str]]:
        # The extractive side's MiniLM is bundled; the abstractive one is configured or absent.
        return self.abstractive.hub_models() if self.abstractive is not None else []

    def setup(self, device: str) -> None:
        self.device = device
        self.extractive.setup(device)
        self.tokenizer = self.extractive.tokenizer
        if self.abstractive is not None:
            self.abstractive.setup(device)

    def pick(self, params: dict[str, Any]) -> Handler:
        method = params.get("method", "auto")
        if method == "extractive" or (method == "auto" and self.abstractive is None):
            return self.extractive
        if self.abstractive is None:
            raise ModelUnavailable(
                "abstractive summaries need a seq2seq model: set DOCBATCH_MODELS__SUMMARIZE__MODEL "
                f"to a hub id or local path (e.g. {self.default_model}), or ask for "
                '{"type": "summarize", "method": "extractive"}'
            )
        return self.abstractive

    def batch_cost(self, params: dict[str, Any]) -> int | None:
        try:
            return self.pick(params).batch_cost(params)
        except ModelUnavailable:  # those documents fail with the reason in predict
            return None

    def check_params(self, params: dict[str, Any]) -> None:
        self.pick(params).check_params(params)

    def chunk_for(self, text: str, params: dict[str, Any]) -> list[Chunk]:
        return self.pick(params).chunk_for(text, params)

    def model_for(self, params: dict[str, Any]) -> tuple[str, str]:
        try:
            return self.pick(params).model_for(params)
        except ModelUnavailable:
            return self.default_model, "not installed"

    def describe_params(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.pick(params).describe_params(params)
        except ModelUnavailable:
            return super().describe_params(params)

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        return self.pick(params).predict(chunks, params)

    def prepare_reduce(self, docs: list[UnitDocument], params: dict[str, Any]) -> None:
        self.pick(params).prepare_reduce(docs, params)

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        return self.pick(params).reduce(text, chunks, outputs, params)
