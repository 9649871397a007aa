"""generate: the handler's batches vs one prompt at a time, and vs the raw model.

    .venv/bin/python -m bench.generate [--prompts 96] [--new-tokens 24] [--threads 1]
        [--device cpu] [--batch-tokens 4096] [--model PATH] [--backend transformers|vllm]

On the same prompts (template-rendered pieces of the stdlib corpus, mixed lengths),
greedy, a fixed number of new tokens (``min_new_tokens`` = ``max_new_tokens``, so every
way does identical work), it times:

- **handler**: ``docbatch.worker.runner.BatchRunner`` over the prompts, as a worker runs them
  (length-sorted token-budget batches, left padding, position ids, completions);
- **one at a time**: ``model.generate`` on each prompt alone, the usual loop;
- **pipeline**: transformers' ``pipeline("text-generation")`` called per prompt;
- **raw batches**: ``model.generate`` on exactly the handler's batches (tokenizer
  padding, no bookkeeping): efficiency = raw seconds / handler seconds (the two
  alternate, best of three each, so load that moves between runs cancels out).

With no ``--model`` it uses the tiny GPT-2 the tests build, which measures the batching
and overheads rather than a real model. ``run.py`` reports the same figures
(``--only generate``); ``gpu.py --generate`` prints them on CUDA, vLLM included.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docbatch.schema.settings import GenerationConfig, ModelConfig
from docbatch.worker.batching import BatchRunner, plan_batches
from docbatch.worker.handlers.generate import GenerateHandler
from tests.fixtures import ARTIFACTS, load_corpus

TEMPLATE = "Text: {text}\nSummary:"


@dataclass
class Figures:
    prompts: int
    new_tokens: int
    handler_s: float
    alone_s: float
    pipeline_s: float
    raw_s: float
    identical: int  # handler output == one-at-a-time output

    @property
    def speedup(self) -> float:
        return self.alone_s / self.handler_s

    @property
    def efficiency(self) -> float:
        return self.raw_s / self.handler_s


def tiny_model() -> str:
    from tests.tiny_causal import build_gpt2

    out = ARTIFACTS / "bench-tiny-gpt2"
    if not (out / "config.json").exists():
        build_gpt2(out)
    return str(out)


def make_handler(model: str, device: str, new_tokens: int, batch_tokens: int, **kw: Any) -> Any:
    config = ModelConfig(
        model=model,
        generation=GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens),
        batch_tokens=batch_tokens,
        **kw,
    )
    handler = GenerateHandler(config)
    handler.setup(device)
    if handler.unavailable is not None:
        raise SystemExit(str(handler.unavailable))
    return handler


def prompts_for(handler: GenerateHandler, params: dict[str, Any], n: int) -> list[Any]:
    docs = load_corpus("stdlib-docs.jsonl")
    out: list[Any] = []
    while len(out) < n:
        for d in docs:
            out += handler.chunk_for(d["text"], params)
            if len(out) >= n:
                break
    return out[:n]


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def measure(handler: GenerateHandler, n: int, new_tokens: int, repeat: int = 3) -> Figures:
    import torch

    params = {"type": "generate", "template": TEMPLATE}
    chunks = prompts_for(handler, params, n)
    texts, lengths = [c.text for c in chunks], [c.tokens for c in chunks]
    runner = BatchRunner(handler)
    runner.run(texts[:4], lengths[:4], params, lambda: False)  # warm-up

    model, tok = handler.model.model, handler.tokenizer
    device = handler.device
    pad = handler.model.pad_id
    gen = {
        "do_sample": False,
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "pad_token_id": pad,
    }

    def alone(prompts: list[str]) -> list[str]:
        out = []
        for text in prompts:
            enc = tok(text, return_tensors="pt").to(device)
            with torch.inference_mode():
                ids = model.generate(**enc, **gen)
            out.append(tok.decode(ids[0][enc["input_ids"].shape[1] :], skip_special_tokens=True))
        return out

    alone(texts[:1])  # warm-up
    t_alone, theirs = timed(lambda: alone(texts))

    from transformers import pipeline

    pipe = pipeline("text-generation", model=model, tokenizer=tok, device=model.device)

    def per_prompt() -> list[Any]:
        return [pipe(t, return_full_text=False, **gen) for t in texts]

    pipe(texts[0], return_full_text=False, **gen)  # warm-up
    t_pipe, _ = timed(per_prompt)

    batches = plan_batches(lengths, handler.batch_budget, handler.config.max_batch_rows)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token

    def raw() -> None:
        for batch in batches:
            enc = tok([texts[i] for i in batch], return_tensors="pt", padding=True).to(device)
            with torch.inference_mode():
                model.generate(**enc, **gen)

    enc = tok(texts[:2], return_tensors="pt", padding=True).to(device)
    with torch.inference_mode():
        model.generate(**enc, **gen)  # warm-up
    # Handler and raw batches alternate, best of ``repeat`` each: on a shared machine the
    # load moves between runs, and the ratio should not measure that.
    t_ours = t_raw = float("inf")
    for _ in range(repeat):
        t, (ours, failures, _) = timed(lambda: runner.run(texts, lengths, params, lambda: False))
        assert not failures, failures
        t_ours = min(t_ours, t)
        t_raw = min(t_raw, timed(raw)[0])
    same = sum(o.text == t for o, t in zip(ours, theirs, strict=True))
    return Figures(len(texts), new_tokens, t_ours, t_alone, t_pipe, t_raw, same)


def report(f: Figures) -> None:
    print(
        f"{f.prompts} prompts x {f.new_tokens} new tokens: handler {f.handler_s:.2f}s, "
        f"one at a time {f.alone_s:.2f}s, pipeline per prompt {f.pipeline_s:.2f}s, "
        f"raw model on the same batches {f.raw_s:.2f}s"
    )
    print(f"batched vs one-at-a-time generate: {f.speedup:.2f}x (target >= 3)")
    print(f"batched vs pipeline per prompt:    {f.pipeline_s / f.handler_s:.2f}x")
    print(f"efficiency vs raw batches:         {f.efficiency:.3f} (target >= 0.9)")
    print(f"identical to generate alone:       {f.identical}/{f.prompts}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=96)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--model", default="", help="causal LM id or path (default: tiny GPT-2)")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or tiny_model()
    handler = make_handler(model, args.device, args.new_tokens, args.batch_tokens)
    print(f"model={Path(model).name} device={args.device} threads={torch.get_num_threads()}")
    report(measure(handler, args.prompts, args.new_tokens))


if __name__ == "__main__":
    main()
