"""summarize, extractive: the sentences most central to the document.

Chunks are the document's sentences (long ones cut to the model limit); each is
embedded, and the sentences closest to the document's mean vector are returned in
document order. This is the offline default; abstractive seq2seq summaries are a
separate handler chosen in the model registry.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worker.chunking import Chunk, chunk_text, sentence_spans
from worker.handlers.base import Output
from worker.handlers.minilm import SentenceEncoderHandler, pooled


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
        return Output({"summary": summary, "method": "extractive", "sentences": chosen})
