"""The CTranslate2 backend: a converted Marian/NLLB/M2M100/BART/T5 model behind the
same surface as ``seq2seq.Seq2SeqModel`` (``tokenizer``, ``input_limit``, ``effective``,
``generate``).

Selected per task with ``DOCBATCH_MODELS__<TASK>__BACKEND=ctranslate2``; ``MODEL`` is
then the directory of a converted model (for translate, a template such as
``/models/ct2/opus-mt-{src}-{tgt}``). Convert once, copying the tokenizer files so the
same directory serves both::

    pip install ctranslate2
    ct2-transformers-converter --model Helsinki-NLP/opus-mt-en-de \\
        --output_dir /models/ct2/opus-mt-en-de --quantization int8_float16 \\
        --copy_files source.spm target.spm vocab.json tokenizer_config.json

(BART/T5/NLLB: copy ``tokenizer.json tokenizer_config.json`` and the special-tokens
files instead.) ``dtype`` maps to CTranslate2's ``compute_type`` (``auto``: the
converted model's own, e.g. int8_float16).
"""

from __future__ import annotations

from typing import Any

from docbatch.schema.errors import ModelUnavailable

COMPUTE_TYPES = {"auto": "default"}  # float32/float16/bfloat16 pass through unchanged


class Ct2Model:
    """A CTranslate2 ``Translator`` plus the Hugging Face tokenizer copied beside it."""

    def __init__(self, path: str, device: str, dtype: str) -> None:
        try:
            import ctranslate2
        except ImportError as exc:
            raise ModelUnavailable(
                "backend ctranslate2 needs the ctranslate2 package: pip install ctranslate2"
            ) from exc
        import torch
        from transformers import AutoTokenizer

        self.path = path
        self.device = device
        self.config: Any = None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.translator = ctranslate2.Translator(
                path,
                device="cuda" if device.startswith("cuda") else "cpu",
                device_index=int(device.partition(":")[2] or 0),
                compute_type=COMPUTE_TYPES.get(dtype, dtype),
                intra_threads=torch.get_num_threads(),
            )
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelUnavailable(f"cannot load CTranslate2 model {path!r}: {exc}") from exc
        self.dtype = self.translator.compute_type

    def input_limit(self) -> int:
        limit = int(getattr(self.tokenizer, "model_max_length", 0) or 0)
        return limit if 0 < limit < 100_000 else 512

    def effective(self, overrides: dict[str, Any]) -> dict[str, Any]:
        return {"backend": "ctranslate2", **overrides}

    def generate(self, texts: list[str], overrides: dict[str, Any]) -> list[str]:
        idx = [i for i, t in enumerate(texts) if t.strip()]
        out = [""] * len(texts)
        if not idx:
            return out
        tok = self.tokenizer
        source = [tok.convert_ids_to_tokens(tok(texts[i])["input_ids"]) for i in idx]
        kw: dict[str, Any] = {
            "beam_size": int(overrides.get("num_beams") or 1),
            # Marian/BART/NLLB in transformers force EOS as the last of max_new_tokens;
            # CTranslate2 would decode one content token more, so stop one earlier.
            "max_decoding_length": max(1, int(overrides.get("max_new_tokens") or 256) - 1),
            "min_decoding_length": int(overrides.get("min_new_tokens") or 0),
            "length_penalty": float(overrides.get("length_penalty") or 1.0),
            "no_repeat_ngram_size": int(overrides.get("no_repeat_ngram_size") or 0),
            "repetition_penalty": float(overrides.get("repetition_penalty") or 1.0),
        }
        forced = overrides.get("forced_bos_token_id")
        if forced is not None:  # NLLB/M2M100: the target language token starts the output
            kw["target_prefix"] = [[tok.convert_ids_to_tokens(forced)]] * len(idx)
        results = self.translator.translate_batch(source, **kw)
        for i, r in zip(idx, results, strict=True):
            ids = tok.convert_tokens_to_ids(r.hypotheses[0])
            out[i] = str(tok.decode(ids, skip_special_tokens=True)).strip()
        return out
