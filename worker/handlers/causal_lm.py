"""Decoder-only models (GPT-2, Llama, Qwen, ...) on transformers: loading and batched generate.

``CausalLM`` is the transformers backend of the generate task (``vllm_engine.VllmModel``
is the other; both take token ids and a ``Sampling`` and return one ``Completion`` per
prompt):

- ``from_pretrained(id_or_path, revision=...)``, refusing checkpoints that are not a
  decoder-only causal LM before loading their weights (a BART or BERT checkpoint would
  otherwise load as a headless decoder and produce noise);
- **left padding** with the attention mask and explicit ``position_ids`` (``cumsum - 1``
  over the mask), so every row sees the positions it would see alone and a batched
  greedy output equals the prompt generated alone (in float32; half precision can
  differ in the last bit with the batch shape, see notes/documents-and-heads.md B5);
- sampling with one ``torch.Generator`` per row seeded with the job's ``seed``, so a
  document's sample does not depend on the batch it landed in;
- stop strings: generation stops a row when it completes one (``StopStringCriteria``),
  and the text is cut before it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from docbatch.schema.errors import ModelUnavailable
from docbatch.worker.handlers.seq2seq import torch_dtype

log = logging.getLogger("docbatch.worker")
DEFAULT_CONTEXT = 1024


@dataclass(frozen=True)
class Sampling:
    """Decoding settings in force for one job (what every result records)."""

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    stop: tuple[str, ...] = ()
    seed: int | None = None
    min_new_tokens: int = 0  # EOS is held back until this many tokens

    def recorded(self) -> dict[str, Any]:
        out = asdict(self)
        out["stop"] = list(self.stop)
        if not self.min_new_tokens:
            out.pop("min_new_tokens")
        if not self.do_sample:
            for key in ("temperature", "top_p", "top_k", "seed"):
                out.pop(key)
        return out


@dataclass
class Completion:
    """One prompt's generated text, why it ended, and its token counts."""

    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_new_tokens)
    prompt_tokens: int
    completion_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string (excluded), and whether one was found."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if not hits:
        return text, False
    return text[: min(hits)], True


def check_causal(config: Any, path: str) -> None:
    """Refuse a checkpoint that is not a decoder-only causal LM, naming what it is."""
    archs = list(getattr(config, "architectures", None) or [])
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    if getattr(config, "is_encoder_decoder", False) or not causal:
        what = ", ".join(archs) or getattr(config, "model_type", "unknown")
        kind = " (encoder-decoder)" if getattr(config, "is_encoder_decoder", False) else ""
        raise ModelUnavailable(
            f"model {path!r} is a {what}{kind}, not a decoder-only causal LM; generate needs "
            "an AutoModelForCausalLM checkpoint (GPT-2, Llama, Qwen, Mistral, ...): set "
            "DOCBATCH_MODELS__GENERATE__MODEL to one"
        )


class SeededSampler:
    """A logits processor that samples each row with its own generator and leaves only
    the drawn token (so the greedy step that follows picks it).

    Sampling inside ``generate``'s greedy loop keeps one RNG per row; ``generate``'s own
    sampling draws the whole batch from the global RNG, so a row's tokens would depend on
    its neighbours.
    """

    def __init__(self, generators: list[Any]) -> None:
        self.generators = generators

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        probs = torch.softmax(scores.float(), dim=-1)
        out = torch.full_like(scores, float("-inf"))
        for row, gen in enumerate(self.generators):
            token = torch.multinomial(probs[row], 1, generator=gen)
            out[row, token] = 0.0
        return out


class CausalLM:
    """A loaded decoder-only model and tokenizer with batched, padding-invariant generate."""

    def __init__(self, path: str, revision: str | None, device: str, dtype: str) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self.path = path
        self.device = device
        kw: dict[str, Any] = {"revision": revision or None}
        try:
            config = AutoConfig.from_pretrained(path, **kw)
            check_causal(config, path)
            self.tokenizer = AutoTokenizer.from_pretrained(path, **kw)
            td = torch_dtype(dtype, device)
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=td, attn_implementation="sdpa", **kw
                )
            except (ValueError, ImportError):  # architecture without SDPA support
                model = AutoModelForCausalLM.from_pretrained(path, dtype=td, **kw)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelUnavailable(
                f"cannot load generate model {path!r} (DOCBATCH_MODELS__GENERATE__MODEL): {exc}"
            ) from exc
        self.tokenizer.padding_side = "left"
        model.to(device)  # type: ignore[arg-type]  # transformers' stub wants a model here
        self.model: Any = model.eval()
        self.config = model.config
        # generate fills every unset value from model.generation_config, so clean that:
        # the sampling defaults of a checkpoint's generation_config.json (Qwen ships
        # temperature, top_k and a repetition penalty) are not applied. What a result
        # records is then all that was in force, and the vLLM backend
        # (generation_config="vllm") decodes the same way.
        from transformers import GenerationConfig

        own = model.generation_config
        ids = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
        model.generation_config = GenerationConfig(
            **{k: getattr(own, k) for k in ids if getattr(own, k, None) is not None}
        )
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        pad = self.tokenizer.pad_token_id
        if pad is None:  # GPT-2 style tokenizers have none; the mask hides it anyway
            pad = min(self.eos_ids) if self.eos_ids else 0
        self.pad_id = int(pad)

    def context_length(self) -> int:
        """Most tokens (prompt plus generated) the model attends to."""
        for key in ("max_position_embeddings", "n_positions", "seq_length"):
            value = getattr(self.config, key, None)
            if value:
                return int(value)
        tok = int(getattr(self.tokenizer, "model_max_length", 0) or 0)
        return tok if 0 < tok < 10_000_000 else DEFAULT_CONTEXT

    def generation_config(self, s: Sampling) -> Any:
        """``s`` over the model's (cleaned) generation config: special token ids only."""
        import copy

        gc = copy.deepcopy(self.model.generation_config)
        # Sampling runs in SeededSampler; generate itself always takes the argmax.
        gc.update(
            do_sample=False,
            num_beams=1,
            max_new_tokens=s.max_new_tokens,
            min_new_tokens=s.min_new_tokens or None,
            pad_token_id=self.pad_id,
        )
        return gc

    def _processors(self, s: Sampling, rows: int) -> Any:
        import torch
        from transformers import LogitsProcessorList
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        out = LogitsProcessorList()
        if not s.do_sample:
            return out
        if s.temperature != 1.0:
            out.append(TemperatureLogitsWarper(s.temperature))
        if s.top_k:
            out.append(TopKLogitsWarper(s.top_k))
        if s.top_p < 1.0:
            out.append(TopPLogitsWarper(s.top_p))
        seed = s.seed if s.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        gens = [torch.Generator(device=self.device).manual_seed(seed) for _ in range(rows)]
        out.append(SeededSampler(gens))
        return out

    def generate(self, prompts: list[list[int]], s: Sampling) -> list[Completion]:
        """One completion per prompt (token ids), generated as one left-padded batch."""
        import torch

        if not prompts:
            return []
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            if p:
                ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
                mask[row, width - len(p) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {}
        if s.stop:
            kwargs = {"stop_strings": list(s.stop), "tokenizer": self.tokenizer}
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
                generation_config=self.generation_config(s),
                logits_processor=self._processors(s, len(prompts)),
                **kwargs,
            )
        new = out[:, width:].tolist()
        return [self._completion(p, toks, s) for p, toks in zip(prompts, new, strict=True)]

    def _completion(self, prompt: list[int], tokens: list[int], s: Sampling) -> Completion:
        ended = self.eos_ids | {self.pad_id}
        n = next((i for i, t in enumerate(tokens) if t in ended), len(tokens))
        text = str(self.tokenizer.decode(tokens[:n], skip_special_tokens=True))
        text, stopped = cut_at_stop(text, s.stop)
        if stopped:
            return Completion(text, "stop", len(prompt), n)
        if n < len(tokens):  # the model ended it (EOS), counted as OpenAI counts it
            return Completion(text, "stop", len(prompt), n + 1)
        return Completion(text, "length", len(prompt), n)
