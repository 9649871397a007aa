"""Fake handlers: the one seam where tests swap the model (DOCBATCH_MODELS__<TASK>__HANDLER)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from docbatch.worker.chunking import Chunk
from docbatch.worker.handlers.base import Handler, Output


class WordTokenizer:
    """Whitespace 'tokenizer' with offsets, enough for docbatch.worker.chunking."""

    model_max_length = 64

    def __call__(self, text: str, **_: Any) -> dict[str, Any]:
        import re

        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        return {"input_ids": list(range(len(spans))), "offset_mapping": spans}


class UpperHandler(Handler):
    """Upper-cases each chunk; sleeps DOCBATCH_FAKE_SLEEP seconds per batch.

    A batch with a chunk containing ``SLOW`` takes 0.2 s longer; ``POISON`` raises (a
    permanent, per-document error); ``KILLME`` SIGKILLs the worker process running it (an
    OOM kill or a segfault); ``HANGME`` never returns (a hung CUDA call or tokenizer);
    a document containing ``NOTJSON`` gets a NaN score, which Postgres refuses to store,
    and one containing ``NUMPY`` a numpy scalar, which the JSON encoder cannot write."""

    task = "summarize"
    default_model = "fake/upper"
    default_revision = "v1"

    def setup(self, device: str) -> None:
        self.tokenizer = WordTokenizer()
        self.sleep = float(os.environ.get("DOCBATCH_FAKE_SLEEP", "0"))

    def special_tokens(self) -> int:
        return 0

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        if any("KILLME" in c for c in chunks):
            os.kill(os.getpid(), signal.SIGKILL)
        if any("HANGME" in c for c in chunks):
            time.sleep(3600)
        if self.sleep:
            time.sleep(self.sleep)
        if any("SLOW" in c for c in chunks):
            time.sleep(0.2)
        for c in chunks:
            if "POISON" in c:
                raise ValueError("poison chunk")
        return [c.upper() for c in chunks]

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        if "NOTJSON" in text:
            return Output({"summary": "".join(outputs), "score": float("nan")})
        if "NUMPY" in text:
            import numpy as np

            return Output({"summary": "".join(outputs), "score": np.float32(0.5)})
        return Output({"summary": "".join(outputs)})


class OomAboveHandler(UpperHandler):
    """Runs out of "memory" on batches of more than ``max_rows`` rows; records batch sizes."""

    def __init__(self, config: Any, max_rows: int = 3) -> None:
        super().__init__(config)
        self.max_rows = max_rows
        self.batch_sizes: list[int] = []

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        self.batch_sizes.append(len(chunks))
        if len(chunks) > self.max_rows:
            import torch  # here, so the fake workers start without loading torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().predict(chunks, params)
