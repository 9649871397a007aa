"""translate: MarianMT per language pair, NLLB-200/M2M100 as the many-to-many option.

Which model serves a pair (``DOCBATCH_MODELS__TRANSLATE__...``):

- ``MODEL`` with ``{src}``/``{tgt}`` (default ``Helsinki-NLP/opus-mt-{src}-{tgt}``): a
  Marian model per pair, a hub id or a local directory template such as
  ``/models/opus-mt-{src}-{tgt}``;
- ``MODEL`` without placeholders: one many-to-many model (NLLB-200 or M2M100) for all;
- ``FALLBACK_MODEL``: the many-to-many model for pairs whose Marian model is missing.

``source_lang`` comes from the task or is detected per document offline
(``docbatch.worker.handlers.language``). Documents are cut at sentence and paragraph
boundaries (then to the model's limit), each piece is translated without its
surrounding whitespace, and the whitespace is put back, so paragraph breaks survive.
Loaded models are kept in an LRU cache (``params.cache_models``, default 4). A pair
with no model fails only its documents, with the model to install.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

from docbatch.schema.errors import ModelUnavailable
from docbatch.schema.settings import ModelConfig
from docbatch.worker.chunking import Chunk, chunk_text, sentence_spans
from docbatch.worker.handlers.base import GROUP_PARAM, Handler, Output, is_hub_id
from docbatch.worker.handlers.language import detect, nllb_code
from docbatch.worker.handlers.seq2seq import load_generator

log = logging.getLogger("docbatch.worker")
MARIAN_HUB = "Helsinki-NLP/opus-mt-{src}-{tgt}"
_EDGE = re.compile(r"^(\s*)(.*?)(\s*)$", re.DOTALL)


class SpmOffsets:
    """Token offsets for slow SentencePiece tokenizers (Marian has no fast tokenizer).

    Gives ``docbatch.worker.chunking`` the ``input_ids``/``offset_mapping`` it needs, counted
    with the same SentencePiece model the tokenizer encodes with.
    """

    def __init__(self, spm: Any) -> None:
        self.spm = spm

    def __call__(self, text: str, **_: Any) -> dict[str, Any]:
        proto = self.spm.encode(text, return_type="proto")
        # Zero-width pieces (the "▁" SentencePiece adds before a text that starts mid-word)
        # are real tokens for the model, so they count.
        pieces = list(proto.pieces)
        size = len(text.encode("utf-8"))
        if size == len(text):  # ASCII: SentencePiece's byte offsets are character offsets
            offsets = [(p.begin, p.end) for p in pieces]
        else:
            char_at = char_of_byte(text, size)
            offsets = [(int(char_at[p.begin]), int(char_at[p.end])) for p in pieces]
        return {"input_ids": [p.id for p in pieces], "offset_mapping": offsets}


def char_of_byte(text: str, size: int) -> Any:
    """The character index of every UTF-8 byte offset of ``text`` (``size`` bytes), and
    ``len(text)`` at ``size``: SentencePiece reports byte offsets, chunking works in
    characters. Vectorised: the Python loop over the characters it replaces was about 30 %
    of translate's chunking CPU (BENCHMARKS.md, "The fixed cost per unit").

    >>> char_of_byte("aé€", 6).tolist()
    [0, 1, 1, 2, 2, 2, 3]
    """
    import numpy as np

    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    width = 1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000)
    char_at = np.empty(size + 1, dtype=np.int64)
    char_at[:size] = np.repeat(np.arange(len(text)), width)
    char_at[size] = len(text)
    return char_at


@dataclasses.dataclass
class PairModel:
    model: Any  # seq2seq.Seq2SeqModel or ct2.Ct2Model
    model_id: str
    many_to_many: bool
    chunk_tokenizer: Any
    max_tokens: int


class TranslateHandler(Handler):
    task = "translate"
    default_model = MARIAN_HUB
    generation_defaults: dict[str, Any] = {"num_beams": 4, "max_new_tokens": 512}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.cache: OrderedDict[str, PairModel] = OrderedDict()
        self.missing: dict[str, str] = {}
        self.cache_size = max(1, int(config.params.get("cache_models", 4)))

    def setup(self, device: str) -> None:
        self.device = device

    # -- which model ------------------------------------------------------------------
    @property
    def per_pair(self) -> bool:
        return "{src}" in self.model_id or "{tgt}" in self.model_id

    @property
    def generation(self) -> dict[str, Any]:
        return self.config.generation.merged(self.generation_defaults)

    def hub_models(self) -> list[tuple[str, str]]:
        # A per-pair template names no model until a pair is known (``pair_models``).
        fallback = self.config.fallback_model
        listed = [(fallback, self.revision)] if is_hub_id(fallback) else []
        return ([] if self.per_pair else super().hub_models()) + listed

    def pair_models(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """(hub id, revision) of the models serving ``pairs`` (source, target)."""
        if not self.per_pair:
            return []
        paths = [self.model_id.format(src=src, tgt=tgt) for src, tgt in pairs]
        return [(p, self.revision) for p in paths if is_hub_id(p)]

    def model_path(self, src: str, tgt: str) -> str:
        """The model ``resolve`` serves src->tgt with, without loading it."""
        if not self.per_pair:
            return self.model_id
        path = self.model_id.format(src=src, tgt=tgt)
        fallback = self.config.fallback_model
        missing = path in self.missing or (
            path.startswith(("/", ".", "~")) and not Path(path).expanduser().exists()
        )
        return fallback if fallback and missing else path

    def result_model(self, params: dict[str, Any], text: str | None = None) -> tuple[str, str]:
        if text is None or not params.get("target_lang"):
            return self.model_for(params)
        try:
            src, tgt = self.pair(text, params)
        except Exception:  # such a document fails later, with its reason
            return self.model_for(params)
        if src == tgt:
            return self.model_for(params)
        return self.model_path(src, tgt), self.revision

    def resolve(self, src: str, tgt: str) -> PairModel:
        """The loaded model for src->tgt (LRU-cached), or ModelUnavailable naming it."""
        if self.per_pair:
            path = self.model_id.format(src=src, tgt=tgt)
            try:
                return self._cached(path, many_to_many=False)
            except ModelUnavailable as exc:
                if not self.config.fallback_model:
                    hub = MARIAN_HUB.format(src=src, tgt=tgt)
                    raise ModelUnavailable(
                        f"no translation model for {src}->{tgt}: install {hub} (as {path}, "
                        "the template in DOCBATCH_MODELS__TRANSLATE__MODEL) or set "
                        "DOCBATCH_MODELS__TRANSLATE__FALLBACK_MODEL to an NLLB-200/M2M100 "
                        f"model ({exc})"
                    ) from None
            return self._cached(self.config.fallback_model, many_to_many=True)
        return self._cached(self.model_id, many_to_many=True)

    def _cached(self, path: str, many_to_many: bool) -> PairModel:
        if path in self.cache:
            self.cache.move_to_end(path)
            return self.cache[path]
        if path in self.missing:
            raise ModelUnavailable(self.missing[path])
        try:
            if path.startswith(("/", ".", "~")) and not Path(path).expanduser().exists():
                raise ModelUnavailable(f"{path} does not exist")
            model = load_generator(path, self.revision, self.config, self.device)
        except (ModelUnavailable, OSError, ValueError) as exc:
            self.missing[path] = str(exc)
            raise ModelUnavailable(str(exc)) from None
        tok = model.tokenizer
        spm = getattr(tok, "spm_source", None) or getattr(tok, "sp_model", None)
        chunk_tok = tok if tok.is_fast else SpmOffsets(spm)
        limit = self.config.max_input_tokens or (
            model.input_limit() - len(tok("", add_special_tokens=True)["input_ids"])
        )
        pm = PairModel(model, path, many_to_many, chunk_tok, limit)
        self.cache[path] = pm
        while len(self.cache) > self.cache_size:
            old, _ = self.cache.popitem(last=False)
            log.info("translation model cache full; unloaded %s", old)
            _free_memory()
        return pm

    # -- the handler contract ---------------------------------------------------------
    def pair(self, text: str, params: dict[str, Any]) -> tuple[str, str]:
        src = params.get("source_lang") or detect(text)
        return str(src), str(params["target_lang"])

    def chunk_for(self, text: str, params: dict[str, Any]) -> list[Chunk]:
        src, tgt = self.pair(text, params)
        group = f"{src}>{tgt}"
        if src == tgt:
            return [Chunk(0, len(text), text, 0, group)]
        pm = self.resolve(src, tgt)  # ModelUnavailable fails this document only
        out: list[Chunk] = []
        for s, e in sentence_spans(text):
            for c in chunk_text(text[s:e], pm.chunk_tokenizer, pm.max_tokens):
                out.append(Chunk(s + c.start, s + c.end, c.text, c.tokens, group))
        return out

    def describe_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**self.config.params, **params, "generation": self.generation}

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        src, _, tgt = str(params[GROUP_PARAM]).partition(">")
        if src == tgt:
            return list(chunks)
        pm = self.resolve(src, tgt)
        texts = [c.strip() for c in chunks]
        overrides = dict(self.generation)
        if pm.many_to_many:
            tok = pm.model.tokenizer
            if "nllb" in type(tok).__name__.lower():
                tok.src_lang = nllb_code(src)
                overrides["forced_bos_token_id"] = tok.convert_tokens_to_ids(nllb_code(tgt))
            else:  # M2M100
                tok.src_lang = src
                overrides["forced_bos_token_id"] = tok.get_lang_id(tgt)
        return pm.model.generate(texts, overrides)

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        parts = []
        for c, out in zip(chunks, outputs, strict=True):
            m = _EDGE.match(c.text)
            lead, trail = (m.group(1), m.group(3)) if m else ("", "")
            if not c.text.strip():
                parts.append(c.text)  # whitespace between paragraphs, kept as is
            else:
                parts.append(lead + out + trail)
        src, tgt = self.pair(text, params)
        data = {
            "translation": "".join(parts),
            "source_lang": src,
            "target_lang": tgt,
            "source_detected": not params.get("source_lang"),
            "chunks": len(chunks),
        }
        if src == tgt:
            return Output({**data, "note": "already in the target language"})
        return Output(data)


def _free_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort
        pass
