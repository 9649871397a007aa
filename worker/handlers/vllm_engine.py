"""The vLLM backend of generate: the offline ``LLM`` engine, pinned once per worker (GPU).

``vllm`` is imported only when ``DOCBATCH_MODELS__GENERATE__BACKEND=vllm``, so CPU
installs never need it. The handler hands the engine token ids it built itself (the
same ids the transformers backend gets: no second BOS from re-encoding a rendered
chat template), one ``SamplingParams`` per job from ``sampling_kwargs``, and the whole
unit's prompts at once, which the engine schedules with continuous batching.

Run the worker with ``--pool solo``: the engine starts a child process, which a
prefork child (daemonic) may not (notes/openai-batch-and-vllm.md 2.7). Greedy output
can depend on the batch unless ``VLLM_BATCH_INVARIANT=1`` (same notes, 2.5).
"""

from __future__ import annotations

import logging
from typing import Any

from docbatch.schema.errors import ModelUnavailable, PermanentError
from docbatch.worker.handlers.causal_lm import Completion, Sampling, check_causal

log = logging.getLogger("docbatch.worker")
GREEDY_TEMPERATURE = 0.0  # vLLM treats temperature < 1e-5 as greedy
FINISHED = {"stop": "stop", "length": "length"}


def sampling_kwargs(s: Sampling) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments for ``s``.

    Always sets ``max_tokens`` (vLLM's default is 16). Greedy is ``temperature=0``;
    stop strings are cut from the text by the engine, as ``CausalLM`` cuts them.
    """
    kw: dict[str, Any] = {
        "n": 1,
        "max_tokens": s.max_new_tokens,
        "min_tokens": s.min_new_tokens,
        "stop": list(s.stop) or None,
        "skip_special_tokens": True,
    }
    if s.do_sample:
        kw.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or 0, seed=s.seed)
    else:
        kw.update(temperature=GREEDY_TEMPERATURE)
    return kw


def engine_prompts(prompts: list[list[int]]) -> list[dict[str, list[int]]]:
    """The engine's inputs: token ids as built by the handler, never re-tokenized."""
    return [{"prompt_token_ids": list(p)} for p in prompts]


def completion_from(output: Any) -> Completion:
    """A ``vllm.RequestOutput`` as a Completion; aborted/errored requests fail the row."""
    best = output.outputs[0]
    reason = FINISHED.get(str(best.finish_reason))
    if reason is None:
        raise PermanentError(f"vLLM ended the request with finish_reason {best.finish_reason!r}")
    return Completion(
        text=best.text,
        finish_reason=reason,
        prompt_tokens=len(output.prompt_token_ids or []),
        completion_tokens=len(best.token_ids),
    )


class VllmModel:
    """The offline vLLM engine with the same interface as ``causal_lm.CausalLM``."""

    def __init__(self, path: str, revision: str | None, device: str, dtype: str) -> None:
        if not device.startswith("cuda"):
            raise ModelUnavailable(
                f"the vllm backend needs a CUDA GPU (device is {device!r}); use "
                "DOCBATCH_MODELS__GENERATE__BACKEND=transformers on CPU"
            )
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ModelUnavailable(
                "DOCBATCH_MODELS__GENERATE__BACKEND=vllm but vllm is not installed "
                f"(pip install vllm): {exc}"
            ) from None
        from transformers import AutoConfig

        check_causal(AutoConfig.from_pretrained(path, revision=revision or None), path)
        self.path = path
        self.device = device
        self.llm = LLM(
            model=path,
            revision=revision or None,
            dtype=dtype,
            seed=0,
            # Results must not depend on the checkpoint's generation_config.json: every
            # setting comes from the registry and the job.
            generation_config="vllm",
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.config = AutoConfig.from_pretrained(path, revision=revision or None)

    def context_length(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    def generate(self, prompts: list[list[int]], s: Sampling) -> list[Completion]:
        from vllm import SamplingParams

        outputs = self.llm.generate(
            engine_prompts(prompts), SamplingParams(**sampling_kwargs(s)), use_tqdm=False
        )
        return [completion_from(o) for o in outputs]
