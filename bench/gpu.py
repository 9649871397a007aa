"""The handlers on a GPU: throughput per dtype and token budget, and the OOM path.

    .venv/bin/python -m bench.gpu [--summarize sshleifer/distilbart-cnn-12-6]
        [--translate /models/opus-mt-{src}-{tgt}] [--chunks 512]
        [--dtypes bfloat16,float16,float32] [--budgets 8192,16384,32768]
        [--generate Qwen/Qwen2.5-0.5B-Instruct] [--generate-backends transformers,vllm]

Needs CUDA (exits with a message otherwise). With no model arguments it uses the tiny
models the tests build, which measures overheads rather than a real model. For each
handler (summarize, translate, embed), dtype and token budget it prints one row:

    handler  dtype  budget  chunks  tokens_in  seconds  chunks/s  tokens_in/s  peak_GiB  oom_splits

``tokens_in`` counts input tokens (the chunker's count); ``peak_GiB`` is
``torch.cuda.max_memory_allocated`` during the run; ``oom_splits`` is how often the
runner split a batch after a CUDA out-of-memory error (and the final budget it shrank
to, if it did). A last line gives the float32 -> best-dtype speed-up per handler.

``generate`` rows (a causal LM: ``--generate``, default the tests' tiny GPT-2) come once
per backend in ``--generate-backends``: ``transformers`` through the runner's token-budget
batches, ``vllm`` with the whole set of prompts handed to the engine at once
(continuous batching; skipped with a message when vllm is not installed). After them,
``bench.generate``'s side-by-side figures on the GPU (float32-free: the first dtype):
handler vs one-at-a-time ``generate`` and efficiency vs raw batches.
Run one worker's worth at a time (``CUDA_VISIBLE_DEVICES=0``), as production does.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

from docbatch.schema.settings import GenerationConfig, ModelConfig
from docbatch.worker.batching import BatchRunner
from docbatch.worker.handlers.abstractive import AbstractiveSummarizeHandler
from docbatch.worker.handlers.base import Handler
from docbatch.worker.handlers.embed import EmbedHandler
from docbatch.worker.handlers.translate import TranslateHandler
from tests.fixtures import load_corpus


class CountingRunner(BatchRunner):
    """A BatchRunner that counts the OOM splits it makes (from the runner's own log)."""

    def __init__(self, handler: Handler) -> None:
        super().__init__(handler)
        self.splits = 0
        runner_log = logging.getLogger("docbatch.worker")
        outer = self

        class _Count(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "out of memory" in record.getMessage():
                    outer.splits += 1

        runner_log.addHandler(_Count())


def chunks_for(handler: Handler, params: dict[str, Any], n: int) -> list[Any]:
    docs = load_corpus("stdlib-docs.jsonl") + load_corpus("licenses.jsonl")
    out: list[Any] = []
    while len(out) < n:  # repeat the corpus if a large n asks for it
        for d in docs:
            out += [c for c in handler.chunk_for(d["text"], params) if c.text.strip()]
            if len(out) >= n:
                break
    return out[:n]


def run(name: str, make: Any, params: dict[str, Any], dtype: str, budget: int, n: int) -> tuple:
    import torch

    handler = make(dtype, budget)
    handler.setup("cuda")
    chunks = chunks_for(handler, params, n)
    texts, lengths, groups = (
        [c.text for c in chunks],
        [c.tokens for c in chunks],
        [c.group for c in chunks],
    )
    runner = CountingRunner(handler)
    runner.run(texts[:16], lengths[:16], params, lambda: False, groups[:16])  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    _, failures, _ = runner.run(texts, lengths, params, lambda: False, groups)
    torch.cuda.synchronize()
    secs = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30
    del handler
    torch.cuda.empty_cache()
    splits = f"{runner.splits} (budget {runner.budget})" if runner.splits else "0"
    return name, dtype, budget, len(texts) - len(failures), sum(lengths), secs, peak, splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--summarize", default="", help="seq2seq model id or path (default: tiny)")
    ap.add_argument("--translate", default="", help="Marian template or NLLB/M2M100 path")
    ap.add_argument("--chunks", type=int, default=512)
    ap.add_argument("--dtypes", default="bfloat16,float16,float32")
    ap.add_argument("--budgets", default="8192,16384,32768")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--generate", default="", help="causal LM id or path (default: tiny GPT-2)")
    ap.add_argument("--generate-backends", default="transformers,vllm", help="empty: skip generate")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs CUDA: no GPU is visible (torch.cuda.is_available() is False)")
    if not (args.summarize and args.translate):
        from tests.tiny_models import _cache_dir, build_all

        tiny = build_all(_cache_dir())
        args.summarize = args.summarize or tiny["bart"]
        args.translate = args.translate or tiny["marian_template"]
    gen = GenerationConfig(num_beams=1, max_new_tokens=args.max_new_tokens)

    def cfg(model: str, dtype: str, budget: int) -> ModelConfig:
        return ModelConfig(model=model, dtype=dtype, batch_tokens=budget, generation=gen)

    makers = [
        ("summarize", lambda d, b: AbstractiveSummarizeHandler(cfg(args.summarize, d, b)), {}),
        (
            "translate",
            lambda d, b: TranslateHandler(cfg(args.translate, d, b)),
            {"source_lang": "en", "target_lang": "de"},
        ),
        ("embed", lambda d, b: EmbedHandler(ModelConfig(batch_tokens=b)), {}),
    ]
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print(
        f"{'handler':<10} {'dtype':<9} {'budget':>6} {'chunks':>6} {'tokens_in':>9} "
        f"{'seconds':>8} {'chunks/s':>9} {'tokens_in/s':>11} {'peak_GiB':>8}  oom_splits"
    )
    best: dict[str, dict[str, float]] = {}
    for name, make, params in makers:
        for dtype in args.dtypes.split(","):
            if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
                continue
            for budget in (int(b) for b in args.budgets.split(",")):
                row = run(name, make, params, dtype, budget, args.chunks)
                _, _, _, n, tokens, secs, peak, splits = row
                rate = n / secs
                best.setdefault(name, {})[dtype] = max(best[name].get(dtype, 0.0), rate)
                print(
                    f"{name:<10} {dtype:<9} {budget:>6} {n:>6} {tokens:>9} {secs:>8.2f} "
                    f"{rate:>9.1f} {tokens / secs:>11.0f} {peak:>8.2f}  {splits}"
                )
    if args.generate_backends:
        run_generate(args)
    for name, rates in best.items():
        if "float32" in rates:
            top = max((r, d) for d, r in rates.items())
            print(f"{name}: {top[1]} is {top[0] / rates['float32']:.2f}x float32")


def run_generate(args: argparse.Namespace) -> None:
    """generate on the GPU: one row per backend and dtype, then the side-by-side figures."""
    import importlib.util

    import torch

    from bench.generate import TEMPLATE, make_handler, measure, prompts_for, tiny_model

    model = args.generate or tiny_model()
    params = {"type": "generate", "template": TEMPLATE}
    for backend in args.generate_backends.split(","):
        if backend == "vllm" and importlib.util.find_spec("vllm") is None:
            print("generate   vllm: not installed (pip install vllm); skipped")
            continue
        for dtype in args.dtypes.split(","):
            handler = make_handler(
                model, "cuda", args.max_new_tokens, 16384, dtype=dtype, backend=backend
            )
            chunks = prompts_for(handler, params, args.chunks)
            texts, lengths = [c.text for c in chunks], [c.tokens for c in chunks]
            runner = CountingRunner(handler)
            runner.run(texts[:8], lengths[:8], params, lambda: False)  # warm-up
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            if backend == "vllm":  # the engine schedules the whole set itself
                outs = handler.predict(texts, params)
            else:
                outs, _, _ = runner.run(texts, lengths, params, lambda: False)
            torch.cuda.synchronize()
            secs = time.perf_counter() - start
            new = sum(o.completion_tokens for o in outs if o is not None)
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(
                f"generate   {backend:<12} {dtype:<9} {len(texts):>6} prompts "
                f"{sum(lengths):>9} tokens_in {new:>9} tokens_out {secs:>8.2f}s "
                f"{len(texts) / secs:>8.1f} prompts/s {new / secs:>9.0f} tokens_out/s "
                f"{peak:>6.2f} GiB"
            )
            del handler
            torch.cuda.empty_cache()
    dtype = args.dtypes.split(",")[0]
    handler = make_handler(model, "cuda", args.max_new_tokens, 16384, dtype=dtype)
    f = measure(handler, min(args.chunks, 128), args.max_new_tokens)
    print(
        f"generate ({dtype}): batched {f.speedup:.2f}x one-at-a-time generate, efficiency "
        f"{f.efficiency:.3f} vs raw batches, identical to alone {f.identical}/{f.prompts} "
        "(half precision may differ with the batch shape)"
    )


if __name__ == "__main__":
    main()
