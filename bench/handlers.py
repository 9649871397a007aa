"""Handlers used only by the benchmarks (plugged in at the handler seam via settings).

- ``NoopHandler``: chunks with the real MiniLM tokenizer, returns at once: the cost of
  everything around the model (orchestration ceiling, ingest/export corpus).
- ``SleepHandler``: sleeps a fixed time per batch (a stand-in for a GPU) for scale-out.
- ``Seq2SeqSummarizeHandler`` / ``Seq2SeqTranslateHandler``: a minimal abstractive
  handler on any local seq2seq model (greedy, a fixed number of new tokens so the
  work is identical to the baseline's). It runs through the same runner/batching as
  every handler; the real abstractive handler replaces it at merge.

``build_tiny_seq2seq(kind, folder)`` saves a randomly initialised tiny BART or T5
with a real (MiniLM WordPiece) tokenizer: no hub needed.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from docbatch.worker.chunking import Chunk
from docbatch.worker.handlers.base import Handler, Output
from docbatch.worker.handlers.minilm import bundled_minilm_path

NEW_TOKENS = int(os.environ.get("DOCBATCH_BENCH_NEW_TOKENS", "24"))


class NoopHandler(Handler):
    """A model that does nothing, behind a whitespace tokenizer (254-word chunks): what
    is left is the orchestration (api, Postgres, Redis, Celery, chunking, result writes).
    ``DOCBATCH_BENCH_NOOP_TOKENIZER=minilm`` chunks with the real MiniLM tokenizer."""

    task = "embed"
    default_model = "bench/noop"
    default_revision = "v1"

    def setup(self, device: str) -> None:
        if os.environ.get("DOCBATCH_BENCH_NOOP_TOKENIZER") == "minilm":
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(bundled_minilm_path())
        else:
            self.tokenizer = _Words()

    @property
    def max_input_tokens(self) -> int:
        return 254

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        return [0] * len(chunks)

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        return Output({"chunks": len(chunks)})


class _Words:
    """Whitespace tokenizer with offsets (cheap chunking for the sleep handler)."""

    model_max_length = 256

    def __call__(self, text: str, **_: Any) -> dict[str, Any]:
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        return {"input_ids": list(range(len(spans))), "offset_mapping": spans}


class SleepHandler(Handler):
    """Sleeps ``DOCBATCH_BENCH_SLEEP`` seconds per batch: a fixed-cost accelerator."""

    task = "embed"
    default_model = "bench/sleep"
    default_revision = "v1"

    def setup(self, device: str) -> None:
        self.tokenizer = _Words()
        self.sleep = float(os.environ.get("DOCBATCH_BENCH_SLEEP", "0.2"))

    def special_tokens(self) -> int:
        return 0

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        time.sleep(self.sleep)
        return [1] * len(chunks)

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        return Output({"chunks": len(chunks)})


class Seq2SeqSummarizeHandler(Handler):
    """Greedy generation of ``NEW_TOKENS`` tokens per chunk; summary = chunk outputs joined."""

    task = "summarize"
    default_model = ""
    output_key = "summary"

    def setup(self, device: str) -> None:
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_id)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(self.model_id).to(device).eval()
        self.device = device
        self._torch = torch

    @property
    def max_input_tokens(self) -> int:
        limit = int(getattr(self.model.config, "max_position_embeddings", 0) or 512)
        return min(limit, 512) - self.special_tokens()

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        enc = self.tokenizer(
            chunks, return_tensors="pt", padding=True, return_token_type_ids=False
        ).to(self.device)
        with self._torch.inference_mode():
            out = self.model.generate(**enc, **generation_kwargs())
        return list(self.tokenizer.batch_decode(out, skip_special_tokens=True))

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        return Output({self.output_key: " ".join(outputs)})


class Seq2SeqTranslateHandler(Seq2SeqSummarizeHandler):
    task = "translate"
    output_key = "translation"


class PlainSeq2SeqPipeline:
    """What transformers' ``SummarizationPipeline`` / ``Text2TextGenerationPipeline`` did
    with default settings (one input at a time: tokenize, ``generate``, decode). Those
    pipelines were removed in transformers 5, so the baseline rebuilds them plainly."""

    def __init__(self, model: str, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(model).to(device).eval()
        self.device = device
        self._torch = torch

    def __call__(self, texts: list[str], **generate: Any) -> list[dict[str, str]]:
        out = []
        for text in texts:
            enc = self.tokenizer(
                text, return_tensors="pt", truncation=True, return_token_type_ids=False
            ).to(self.device)
            with self._torch.inference_mode():
                ids = self.model.generate(**enc, **generate)
            out.append({"summary_text": self.tokenizer.decode(ids[0], skip_special_tokens=True)})
        return out


def generation_kwargs() -> dict[str, Any]:
    """The same decoding for our handler and the pipeline baseline: identical work."""
    return {
        "max_new_tokens": NEW_TOKENS,
        "min_new_tokens": NEW_TOKENS,
        "num_beams": 1,
        "do_sample": False,
    }


def build_tiny_seq2seq(kind: str, folder: Path) -> Path:
    """Save a randomly initialised tiny ``bart`` or ``t5`` plus tokenizer into ``folder``."""
    import torch
    from transformers import (
        AutoTokenizer,
        BartConfig,
        BartForConditionalGeneration,
        T5Config,
        T5ForConditionalGeneration,
    )

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(bundled_minilm_path())
    tok.model_max_length = 512
    tok.model_input_names = ["input_ids", "attention_mask"]  # no token_type_ids for seq2seq
    pad, cls, sep = tok.pad_token_id, tok.cls_token_id, tok.sep_token_id
    model: Any
    if kind == "bart":
        config = BartConfig(
            vocab_size=tok.vocab_size,
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            max_position_embeddings=512,
            pad_token_id=pad,
            bos_token_id=cls,
            eos_token_id=sep,
            decoder_start_token_id=cls,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
        )
        model = BartForConditionalGeneration(config)
    elif kind == "t5":
        config = T5Config(
            vocab_size=tok.vocab_size,
            d_model=64,
            d_kv=32,
            d_ff=128,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=2,
            pad_token_id=pad,
            eos_token_id=sep,
            decoder_start_token_id=pad,
        )
        model = T5ForConditionalGeneration(config)
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}")
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


class NoopSummarizeHandler(NoopHandler):
    """The no-op model behind the summarize queue (the OpenAI batch bench's endpoint)."""

    task = "summarize"
