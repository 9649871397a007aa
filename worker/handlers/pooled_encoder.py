"""A sentence-transformers model of the plain shape, run with transformers alone.

Most sentence encoders, the bundled all-MiniLM-L6-v2 among them, are three modules:
Transformer -> Pooling (mean, CLS or max over the attention mask) -> Normalize. For a
local model folder of exactly that shape, ``PooledEncoder`` does the same computation
with ``AutoTokenizer`` + ``AutoModel`` (equal to ``SentenceTransformer.encode`` within
float rounding, tests/test_pooled_encoder.py). The point is start-up: importing
sentence-transformers pulls in scikit-learn, scipy and torch.distributed, about twice the
import time of transformers and torch alone (BENCHMARKS.md, "Measurements behind the
code"); every worker start and every ``docbatch run`` paid it before its first unit.

``load_plain_encoder`` returns None for any other shape (prompts, lower-casing, other
pooling modes, extra modules, a hub id): those load through ``SentenceTransformer``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"
# Pooling modes this class computes; any other mode switched on means SentenceTransformer.
POOLING_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
}
OTHER_MODES = (
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


class PooledEncoder:
    """Tokenize (truncated at ``max_seq_length``), forward, pool, optionally normalise."""

    def __init__(
        self, tokenizer: Any, model: Any, max_seq_length: int, pooling: str, normalize: bool
    ) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.max_seq_length = max_seq_length
        self.pooling = pooling
        self.normalize = normalize
        self.dim = int(model.config.hidden_size)

    @property
    def device(self) -> Any:
        return self.model.device

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts: list[str], normalize_embeddings: bool = False, **_: Any) -> np.ndarray:
        """One forward pass over ``texts`` (the caller batches); float32 rows.

        Accepts (and ignores) SentenceTransformer.encode's batching keywords, so callers
        can hold either kind of model.
        """
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        enc = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_seq_length,
            return_tensors="pt",
        ).to(self.model.device)
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
            vectors = pool(hidden, enc["attention_mask"], self.pooling)
            if self.normalize or normalize_embeddings:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return vectors.float().cpu().numpy()


def pool(hidden: Any, mask: Any, mode: str) -> Any:
    """sentence-transformers' Pooling for one mode, over the real (unmasked) tokens."""
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        import torch

        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def plain_shape(folder: Path) -> dict[str, Any] | None:
    """What a plain-shaped model folder needs loaded, or None if it is anything else."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
        types = [m["type"] for m in modules]
        if types not in ([TRANSFORMER, POOLING], [TRANSFORMER, POOLING, NORMALIZE]):
            return None
        transformer = folder / modules[0].get("path", "")
        st_config = read_json(transformer / "sentence_bert_config.json")
        pooling = read_json(folder / modules[1]["path"] / "config.json")
        prompts = read_json(folder / "config_sentence_transformers.json")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if st_config.get("do_lower_case") or prompts.get("default_prompt_name"):
        return None
    if set(st_config) - {"max_seq_length", "do_lower_case"}:
        return None  # model/tokenizer arguments this class does not pass on
    modes = [name for key, name in POOLING_MODES.items() if pooling.get(key)]
    if len(modes) != 1 or any(pooling.get(k) for k in OTHER_MODES):
        return None
    return {
        "path": transformer,
        "max_seq_length": st_config.get("max_seq_length"),
        "pooling": modes[0],
        "normalize": types[-1] == NORMALIZE,
    }


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def load_plain_encoder(model: str, device: str) -> PooledEncoder | None:
    """A PooledEncoder for a local plain-shaped folder; None means use SentenceTransformer."""
    folder = Path(model)
    if not folder.is_dir():
        return None
    shape = plain_shape(folder)
    if shape is None:
        return None
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(shape["path"]))
    net = AutoModel.from_pretrained(str(shape["path"]), dtype=torch.float32).to(device).eval()
    limit = shape["max_seq_length"] or tokenizer.model_max_length
    positions = getattr(net.config, "max_position_embeddings", None)
    if positions and positions > 0:
        limit = min(int(limit), int(positions))
    return PooledEncoder(tokenizer, net, int(limit), shape["pooling"], shape["normalize"])
