"""generate: prompted generation with a decoder-only model, map-reduce over long documents.

The job's params (``docbatch.schema.models.GenerateTask``) say how a document becomes a prompt
(``docbatch.worker.handlers.prompts``) and how to decode; the registry
(``DOCBATCH_MODELS__GENERATE__*``) picks the model, the backend (``transformers`` on CPU
or GPU, ``vllm`` on GPU) and the decoding defaults. Precedence: the job, then the
registry's ``generation``, then ``generation_defaults``.

Chunks are prompts: ``chunk_for`` renders each piece of the document into its prompt
and counts the prompt's tokens, so the runner's token-budget batches are sized by what
the model really reads. A prompt plus ``max_new_tokens`` must fit the model's context:

- input ``text``: a document too long for one prompt is cut into pieces that fit, each
  generated on its own (map); ``reduce_template`` folds the piece outputs into one
  (reduce, round after round until it fits, as summarize does); ``truncate=false``
  fails such a document instead, saying how much fits;
- input ``prompt`` / ``messages``: the prompt is the caller's; one that does not fit
  fails its document.

Every result records the decoding settings in force (``params.sampling``), the template
in force, and per document ``usage`` (prompt/completion tokens, all calls summed) and
``finish_reason`` (``stop``: EOS or a stop string; ``length``: ``max_new_tokens``).
"""

from __future__ import annotations

import logging
from typing import Any

from docbatch.schema.errors import ModelUnavailable, PermanentError
from docbatch.schema.settings import ModelConfig
from docbatch.worker.batching import plan_batches
from docbatch.worker.chunking import Chunk, chunk_text
from docbatch.worker.handlers.base import Handler, Output
from docbatch.worker.handlers.causal_lm import CausalLM, Completion, Sampling
from docbatch.worker.handlers.prompts import (
    DEFAULT_TEMPLATE,
    build_prompt,
    fill,
    render_chat,
    uses_chat,
)

log = logging.getLogger("docbatch.worker")
MAX_ROUNDS = 8
# Tokens kept free when a document piece is cut to fit a template: BPE merges across the
# seam between template and text can shift the count by a token or two.
SEAM_MARGIN = 4
MIN_PIECE_TOKENS = 8
# With vLLM the runner's "batch" is the whole unit (the engine batches continuously).
VLLM_UNIT_TOKENS = 1 << 40
VLLM_UNIT_ROWS = 1 << 20
MAX_NEW_TOKENS_SETTING = (
    "tasks[].max_new_tokens or DOCBATCH_MODELS__GENERATE__GENERATION__MAX_NEW_TOKENS"
)


def load_causal(path: str, revision: str, config: ModelConfig, device: str) -> Any:
    """The registry's backend for ``path`` at ``revision`` (the handler's: the one its
    results record): CausalLM (transformers) or VllmModel."""
    if config.backend == "vllm":
        from docbatch.worker.handlers.vllm_engine import VllmModel

        return VllmModel(path, revision, device, config.dtype)
    if config.backend != "transformers":
        raise ModelUnavailable(
            f"backend {config.backend!r} is not one of transformers, vllm "
            "(DOCBATCH_MODELS__GENERATE__BACKEND)"
        )
    return CausalLM(path, revision, device, config.dtype)


def usage(completions: list[Completion]) -> dict[str, int]:
    prompt = sum(c.prompt_tokens for c in completions)
    completion = sum(c.completion_tokens for c in completions)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class GenerateHandler(Handler):
    """The generate worker's handler. A model that cannot be loaded (missing, or not a
    causal LM) does not stop the worker: every document fails with the reason and the
    setting to change."""

    task = "generate"
    default_model = "Qwen/Qwen2.5-0.5B-Instruct"
    default_revision = "7ae5576"  # the revision transformers' own text-generation default pins
    generation_defaults: dict[str, Any] = {"max_new_tokens": 128}

    def __init__(self, config: ModelConfig) -> None:
        if config.backend == "vllm":
            # The engine schedules what it is given with continuous batching and manages
            # its own memory: hand it the unit's prompts at once, not budget-sized batches.
            config = config.model_copy(update={"max_batch_rows": VLLM_UNIT_ROWS})
        super().__init__(config)
        self.model: Any = None  # CausalLM or vllm_engine.VllmModel
        self.unavailable: ModelUnavailable | None = None

    def setup(self, device: str) -> None:
        self.device = device
        try:
            self.model = load_causal(self.model_id, self.revision, self.config, device)
        except ModelUnavailable as exc:
            self.unavailable = exc
            log.error("generate model unavailable: %s", exc)
            return
        self.tokenizer = self.model.tokenizer
        log.info("loaded %s on %s (%s)", self.model_id, device, self.config.backend)

    @property
    def batch_budget(self) -> int:
        if self.config.backend == "vllm" and not self.config.batch_tokens:
            return VLLM_UNIT_TOKENS
        return super().batch_budget

    # -- parameters -------------------------------------------------------------------
    def sampling(self, params: dict[str, Any]) -> Sampling:
        """The decoding settings in force for a job's ``params``."""
        registry = self.config.generation.model_dump(exclude_none=True)
        merged = {**self.generation_defaults, **registry, **params}
        if "do_sample" in params:
            do_sample = bool(params["do_sample"])
        elif "temperature" in params:
            do_sample = float(params["temperature"]) > 0
        elif "do_sample" in registry:
            do_sample = bool(registry["do_sample"])
        else:
            do_sample = float(registry.get("temperature", 0)) > 0
        return Sampling(
            max_new_tokens=int(merged["max_new_tokens"]),
            do_sample=do_sample,
            temperature=float(merged.get("temperature") or 1.0),
            top_p=float(merged.get("top_p", 1.0)),
            top_k=int(merged.get("top_k", 0)),
            stop=tuple(params.get("stop") or ()),
            seed=params.get("seed"),
            min_new_tokens=int(registry.get("min_new_tokens", 0)),
        )

    def prompt_limit(self, s: Sampling) -> int:
        """Most prompt tokens that leave room for ``max_new_tokens`` in the context."""
        assert self.model is not None
        context = self.model.context_length()
        if self.config.max_input_tokens:
            context = min(context, self.config.max_input_tokens + s.max_new_tokens)
        limit = context - s.max_new_tokens
        if limit < 1:
            raise PermanentError(
                f"max_new_tokens {s.max_new_tokens} fills the model's whole context of "
                f"{context} tokens; lower {MAX_NEW_TOKENS_SETTING}"
            )
        return limit

    def check_params(self, params: dict[str, Any]) -> None:
        if self.unavailable is not None:
            raise self.unavailable
        s = self.sampling(params)
        limit = self.prompt_limit(s)
        if params.get("input", "text") == "text":
            self._piece_budget(params, limit, s)

    def describe_params(self, params: dict[str, Any]) -> dict[str, Any]:
        recorded = {**self.config.params, **params}
        recorded["sampling"] = self.sampling(params).recorded()
        recorded["backend"] = self.config.backend
        if params.get("input", "text") == "text":
            recorded["template"] = params.get("template") or DEFAULT_TEMPLATE
        return recorded

    # -- prompts ----------------------------------------------------------------------
    def _special(self, params: dict[str, Any]) -> bool:
        """Whether the tokenizer adds its special tokens (not to a rendered chat template)."""
        return not uses_chat(params, self.tokenizer)

    def _encode(self, prompts: list[str], params: dict[str, Any]) -> list[list[int]]:
        enc = self.tokenizer(
            prompts, add_special_tokens=self._special(params), return_attention_mask=False
        )
        return [list(ids) for ids in enc["input_ids"]]

    def _piece_budget(self, params: dict[str, Any], limit: int, s: Sampling) -> int:
        overhead = len(self._encode([build_prompt("", params, self.tokenizer).text], params)[0])
        budget = limit - overhead - SEAM_MARGIN
        if budget < MIN_PIECE_TOKENS:
            raise PermanentError(
                f"the template and examples take {overhead} tokens and max_new_tokens "
                f"{s.max_new_tokens}: with the model's context of {limit + s.max_new_tokens} "
                f"tokens no room is left for the document; shorten the template or lower "
                f"{MAX_NEW_TOKENS_SETTING}"
            )
        return budget

    def _reduce_prompt(self, text: str, params: dict[str, Any]) -> str:
        body = fill(str(params["reduce_template"]), text)
        if not uses_chat(params, self.tokenizer):
            return body
        messages = [{"role": "user", "content": body}]
        if params.get("system"):
            messages.insert(0, {"role": "system", "content": str(params["system"])})
        return render_chat(self.tokenizer, messages)

    def chunk_for(self, text: str, params: dict[str, Any]) -> list[Chunk]:
        """The document's prompts, as chunks over the document's characters."""
        s = self.sampling(params)
        limit = self.prompt_limit(s)
        if params.get("input", "text") != "text":
            prompt = build_prompt(text, params, self.tokenizer)
            n = len(self._encode([prompt.text], params)[0])
            if n == 0:
                raise PermanentError("the prompt is empty: the document text has no tokens")
            if n > limit:
                raise PermanentError(
                    f"the prompt is {n} tokens; with max_new_tokens {s.max_new_tokens} the "
                    f"model's context fits {limit}; shorten it or lower {MAX_NEW_TOKENS_SETTING}"
                )
            return [Chunk(0, len(text), prompt.text, n)]
        budget = self._piece_budget(params, limit, s)
        pieces = chunk_text(text, self.tokenizer, budget)
        if len(pieces) > 1 and not params.get("truncate", True):
            total = sum(p.tokens for p in pieces)
            raise PermanentError(
                f"the document is {total} tokens and one prompt fits {budget} of them (model "
                f"context {limit + s.max_new_tokens} minus the template and max_new_tokens "
                f"{s.max_new_tokens}); set truncate=true to generate per chunk (with "
                "reduce_template to fold the outputs), or lower max_new_tokens"
            )
        prompts = [build_prompt(p.text, params, self.tokenizer).text for p in pieces]
        counts = [len(ids) for ids in self._encode(prompts, params)]
        return [
            Chunk(p.start, p.end, prompt, n)
            for p, prompt, n in zip(pieces, prompts, counts, strict=True)
        ]

    # -- model ------------------------------------------------------------------------
    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        """One Completion per prompt (the chunk texts are rendered prompts)."""
        if self.unavailable is not None:
            raise self.unavailable
        assert self.model is not None, "setup() was not called"
        s = self.sampling(params)
        limit = self.prompt_limit(s)
        ids = self._encode(chunks, params)
        longest = max((len(i) for i in ids), default=0)
        if longest > limit:  # only a handful of tokens over, from a seam merge
            raise PermanentError(f"a prompt is {longest} tokens; the limit is {limit}")
        return list(self.model.generate(ids, s))

    def _generate_all(self, prompts: list[str], params: dict[str, Any]) -> list[Completion]:
        """Completions of ``prompts`` in order, in token-budget batches like the map step."""
        out: list[Any] = [None] * len(prompts)
        lengths = [len(i) for i in self._encode(prompts, params)]
        for batch in plan_batches(lengths, self.batch_budget, self.config.max_batch_rows):
            for i, c in zip(batch, self.predict([prompts[i] for i in batch], params), strict=True):
                out[i] = c
        return out

    # -- reduce -----------------------------------------------------------------------
    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        calls: list[Completion] = list(outputs)
        data: dict[str, Any] = {"chunks": [[c.start, c.end, c.tokens] for c in chunks]}
        if len(outputs) == 1:
            final = outputs[0]
        else:
            data["outputs"] = [{"text": o.text, "finish_reason": o.finish_reason} for o in outputs]
            if params.get("reduce_template"):
                final, more, rounds = self._fold([o.text for o in outputs], params)
                calls += more
                data["rounds"] = rounds
            else:
                reason = "length" if any(o.finish_reason == "length" for o in outputs) else "stop"
                final = Completion("\n".join(o.text for o in outputs), reason, 0, 0)
        data.update(text=final.text, finish_reason=final.finish_reason, usage=usage(calls))
        return Output(data)

    def _fold(
        self, pieces: list[str], params: dict[str, Any]
    ) -> tuple[Completion, list[Completion], int]:
        """Reduce prompts over the joined piece outputs until one prompt holds them all;
        returns (final completion, every completion made, rounds)."""
        s = self.sampling(params)
        limit = self.prompt_limit(s)
        calls: list[Completion] = []
        joined = "\n".join(pieces)
        size = len(self.tokenizer(joined, add_special_tokens=False)["input_ids"])
        for rounds in range(1, MAX_ROUNDS + 1):
            prompt = self._reduce_prompt(joined, params)
            if len(self._encode([prompt], params)[0]) <= limit:
                final = self.predict([prompt], params)[0]
                return final, [*calls, final], rounds
            empty = len(self._encode([self._reduce_prompt("", params)], params)[0])
            budget = limit - empty - SEAM_MARGIN
            if budget < MIN_PIECE_TOKENS:
                raise PermanentError(
                    f"reduce_template takes {empty} tokens, leaving no room in a prompt of "
                    f"{limit} tokens; shorten it or lower {MAX_NEW_TOKENS_SETTING}"
                )
            parts = chunk_text(joined, self.tokenizer, budget)
            done = self._generate_all([self._reduce_prompt(p.text, params) for p in parts], params)
            calls += done
            joined = "\n".join(c.text for c in done)
            new_size = len(self.tokenizer(joined, add_special_tokens=False)["input_ids"])
            if new_size >= size:
                raise PermanentError(
                    f"reduce outputs do not shrink ({size} -> {new_size} tokens); lower "
                    f"{MAX_NEW_TOKENS_SETTING} well below the prompt limit ({limit} tokens)"
                )
            size = new_size
        raise PermanentError(f"reduce still over the prompt limit after {MAX_ROUNDS} rounds")
