"""embed: a vector per chunk and a pooled (token-weighted mean) document vector."""

from __future__ import annotations

from typing import Any

import numpy as np

from docbatch.worker.chunking import Chunk
from docbatch.worker.handlers.base import Output
from docbatch.worker.handlers.minilm import SentenceEncoderHandler, pooled


class EmbedHandler(SentenceEncoderHandler):
    task = "embed"

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        doc = pooled(outputs, [c.tokens for c in chunks])
        # Row 0 is the document vector, rows 1.. the chunk vectors (float32, stored as bytes).
        vectors = np.vstack([doc[None, :], np.stack(outputs)]).astype(np.float32)
        return Output(
            {
                "dim": int(vectors.shape[1]),
                "chunks": [[c.start, c.end, c.tokens] for c in chunks],
            },
            vectors=vectors,
        )
