"""Seq2seq models (BART, T5, Pegasus, Marian, NLLB/M2M100): loading and batched generation.

``Seq2SeqModel`` is the one place that loads a generation model and runs it:

- ``from_pretrained(id_or_path, revision=...)`` for tokenizer and model, so a hub id
  with a pinned revision and a local directory go through the same code;
- dtype from the registry (``auto``: bf16 on a GPU that has it, else fp16; float32 on
  CPU), SDPA attention where the architecture supports it, ``torch.inference_mode``;
- right padding with the attention mask passed, so a chunk's output does not depend
  on the batch it landed in (encoder-decoder models see no position shift from right
  padding; ``tests/test_handlers_seq2seq.py`` checks batched == one at a time);
- the generation parameters in force (registry values over the model's own
  ``generation_config``) are what every result records.

``Seq2SeqHandler`` is the Handler built on it; summarize and translate subclass it.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from docbatch.schema.errors import ModelUnavailable
from docbatch.schema.settings import ModelConfig
from docbatch.worker.handlers.base import Handler

log = logging.getLogger("docbatch.worker")

# Generation settings recorded on every result (the values in force, not only overrides).
RECORDED_KEYS = (
    "num_beams",
    "max_new_tokens",
    "min_new_tokens",
    "max_length",
    "min_length",
    "length_penalty",
    "no_repeat_ngram_size",
    "repetition_penalty",
    "early_stopping",
    "do_sample",
)
DEFAULT_INPUT_LIMIT = 512


def torch_dtype(name: str, device: str) -> Any:
    """The torch dtype for a registry ``dtype`` on ``device``."""
    import torch

    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[
            name
        ]
    except KeyError:
        raise ValueError(
            f"dtype {name!r} is not one of auto, float32, float16, bfloat16 "
            "(DOCBATCH_MODELS__<TASK>__DTYPE)"
        ) from None


class Seq2SeqModel:
    """A loaded seq2seq model and tokenizer with batched, padding-invariant ``generate``."""

    def __init__(self, path: str, revision: str | None, device: str, dtype: str) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.path = path
        self.device = device
        kw: dict[str, Any] = {"revision": revision or None}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, **kw)
            td = torch_dtype(dtype, device)
            try:
                model = AutoModelForSeq2SeqLM.from_pretrained(
                    path, dtype=td, attn_implementation="sdpa", **kw
                )
            except (ValueError, ImportError):  # architecture without SDPA support
                model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=td, **kw)
        except OSError as exc:
            raise ModelUnavailable(f"cannot load model {path!r}: {exc}") from exc
        self.tokenizer.padding_side = "right"
        self.model = model.to(device).eval()
        self.config = model.config
        self.name_or_path = str(getattr(model.config, "_name_or_path", path) or path)

    def input_limit(self) -> int:
        """Most tokens the encoder takes, special tokens included."""
        limits = []
        tok = int(getattr(self.tokenizer, "model_max_length", 0) or 0)
        if 0 < tok < 100_000:
            limits.append(tok)
        pos = getattr(self.config, "max_position_embeddings", None)
        if pos:
            limits.append(int(pos))
        return min(limits) if limits else DEFAULT_INPUT_LIMIT

    def generation_config(self, overrides: dict[str, Any]) -> Any:
        gc = copy.deepcopy(self.model.generation_config)
        if "max_new_tokens" in overrides:
            gc.max_length = None  # max_new_tokens governs; keep them from fighting
        gc.update(**overrides)
        return gc

    def effective(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The generation settings ``generate`` runs with, for recording."""
        gc = self.generation_config(overrides)
        return {k: getattr(gc, k, None) for k in RECORDED_KEYS if getattr(gc, k, None) is not None}

    def encode(self, texts: list[str], **tokenizer_kwargs: Any) -> Any:
        return self.tokenizer(
            texts, padding=True, truncation=False, return_tensors="pt", **tokenizer_kwargs
        ).to(self.device)

    def generate(
        self, texts: list[str], overrides: dict[str, Any], **generate_kwargs: Any
    ) -> list[str]:
        """One decoded output per text; empty texts give empty outputs without a model call."""
        import torch

        idx = [i for i, t in enumerate(texts) if t.strip()]
        out = [""] * len(texts)
        if not idx:
            return out
        batch = self.encode([texts[i] for i in idx])
        with torch.inference_mode():
            ids = self.model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                generation_config=self.generation_config(overrides),
                **generate_kwargs,
            )
        decoded = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        for i, text in zip(idx, decoded, strict=True):
            out[i] = text.strip()
        return out


def load_generator(path: str, revision: str, config: ModelConfig, device: str) -> Any:
    """The registry's backend for ``path`` at ``revision`` (the handler's: the one its
    results record): Seq2SeqModel, or Ct2Model for ctranslate2."""
    if config.backend == "ctranslate2":
        from docbatch.worker.handlers.ct2 import Ct2Model

        return Ct2Model(path, device, config.dtype)
    if config.backend != "transformers":
        raise ValueError(
            f"backend {config.backend!r} is not one of transformers, ctranslate2 "
            "(DOCBATCH_MODELS__<TASK>__BACKEND)"
        )
    return Seq2SeqModel(path, revision, device, config.dtype)


class Seq2SeqHandler(Handler):
    """A Handler around one ``Seq2SeqModel`` (the task's registry entry).

    Subclasses set ``generation_defaults`` (overridden by the registry's ``generation``)
    and implement ``reduce``.
    """

    generation_defaults: dict[str, Any] = {}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.model: Any = None  # Seq2SeqModel, or ct2.Ct2Model
        self.prefix = str(config.params.get("prefix", ""))

    def setup(self, device: str) -> None:
        self.device = device
        self.model = load_generator(self.model_id, self.revision, self.config, device)
        self.tokenizer = self.model.tokenizer
        if not self.prefix:
            # T5 checkpoints carry their task prefix ("summarize: ") in the config.
            tsp = getattr(self.model.config, "task_specific_params", None) or {}
            self.prefix = str(tsp.get("summarization", {}).get("prefix", ""))
        log.info("loaded %s on %s (%s)", self.model_id, device, self.config.backend)

    @property
    def generation(self) -> dict[str, Any]:
        return self.config.generation.merged(self.generation_defaults)

    @property
    def max_input_tokens(self) -> int:
        if self.config.max_input_tokens:
            return self.config.max_input_tokens
        assert self.model is not None
        return self.model.input_limit() - self.special_tokens()

    def special_tokens(self) -> int:
        # The prefix is sent with every chunk, so it counts against the limit too.
        return len(self.tokenizer(self.prefix, add_special_tokens=True)["input_ids"])

    def describe_params(self, params: dict[str, Any]) -> dict[str, Any]:
        recorded = {**self.config.params, **params}
        if self.model is not None:
            recorded["generation"] = self.model.effective(self.generation)
        return recorded

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        assert self.model is not None, "setup() was not called"
        texts = [self.prefix + c.strip() if c.strip() else "" for c in chunks]
        return self.model.generate(texts, self.generation)
