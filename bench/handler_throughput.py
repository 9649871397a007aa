"""Handler throughput versus plain transformers, one document at a time, on the same chunks.

    .venv/bin/python -m bench.handler_throughput [--chunks 256] [--threads 1] [--device cpu] [--ct2]

Prints one row per handler: chunks, the handler's chunks/s (length-sorted token-budget
batches through ``docbatch.worker.runner.BatchRunner``, as a worker runs them), the baseline's
chunks/s, the ratio handler/baseline, and how many outputs are identical.

Baselines: for summarize and translate, what transformers' ``pipeline`` did per input
with its default batch size of 1 (tokenize one text, ``model.generate``, decode); the
``summarization``/``translation`` pipelines are gone from transformers 5, so that loop is
written out here, with the same greedy generation settings as the handler. For embed,
``SentenceTransformer.encode`` one chunk at a time on the same bundled MiniLM.

The seq2seq models are the tiny random models the tests build (``tests/tiny_models.py``),
so absolute figures say little; the ratio is what batching buys on this machine.
``--ct2`` adds the translate handler on the CTranslate2 backend (the tiny Marian
converted with ``ctranslate2.converters.TransformersConverter``, as
``ct2-transformers-converter`` does) and its ratio to the transformers backend.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from docbatch.schema.settings import GenerationConfig, ModelConfig
from docbatch.worker.batching import BatchRunner
from docbatch.worker.handlers.abstractive import AbstractiveSummarizeHandler
from docbatch.worker.handlers.base import Handler
from docbatch.worker.handlers.embed import EmbedHandler
from docbatch.worker.handlers.translate import TranslateHandler
from tests.fixtures import load_corpus
from tests.tiny_models import _cache_dir, build_all, convert_ct2

GREEDY = GenerationConfig(num_beams=1, max_new_tokens=16, min_new_tokens=4)


def corpus_chunks(handler: Handler, params: dict[str, Any], n: int) -> list[Any]:
    docs = load_corpus("stdlib-docs.jsonl") + load_corpus("licenses.jsonl", 2)
    out = []
    for d in docs:
        out += [c for c in handler.chunk_for(d["text"], params) if c.text.strip()]
        if len(out) >= n:
            break
    return out[:n]


def timed(fn: Callable[[], list[Any]]) -> tuple[float, list[Any]]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def plain_generate(model: Any, tok: Any, gen: Any, texts: list[str]) -> list[str]:
    out = []
    for text in texts:
        enc = tok([text], return_tensors="pt").to(model.device)
        with torch.no_grad():
            ids = model.generate(**enc, generation_config=gen)
        out.append(tok.decode(ids[0], skip_special_tokens=True).strip())
    return out


def bench_seq2seq(
    name: str, handler: Any, params: dict[str, Any], n: int, baseline: Any = None
) -> tuple:
    chunks = corpus_chunks(handler, params, n)
    texts, lengths = [c.text for c in chunks], [c.tokens for c in chunks]
    groups = [c.group for c in chunks]
    runner = BatchRunner(handler)
    runner.run(texts[:8], lengths[:8], params, lambda: False, groups[:8])  # warm-up
    t_ours, (ours, _, _) = timed(lambda: runner.run(texts, lengths, params, lambda: False, groups))
    model = baseline or (
        handler.model
        if isinstance(handler, AbstractiveSummarizeHandler)
        else handler.resolve(params["source_lang"], params["target_lang"]).model
    )
    gen = model.generation_config(handler.generation)
    prefix = getattr(handler, "prefix", "")
    inputs = [prefix + t.strip() for t in texts]
    t_base, base = timed(lambda: plain_generate(model.model, model.tokenizer, gen, inputs))
    same = sum(a == b for a, b in zip(ours, base, strict=True))
    return name, len(texts), len(texts) / t_ours, len(texts) / t_base, same


def bench_embed(n: int, device: str) -> tuple:
    handler = EmbedHandler(ModelConfig())
    handler.setup(device)
    chunks = corpus_chunks(handler, {}, n)
    texts, lengths = [c.text for c in chunks], [c.tokens for c in chunks]
    runner = BatchRunner(handler)
    runner.run(texts[:8], lengths[:8], {}, lambda: False)
    t_ours, (ours, _, _) = timed(lambda: runner.run(texts, lengths, {}, lambda: False))
    from sentence_transformers import SentenceTransformer

    from docbatch.worker.handlers.minilm import bundled_minilm_path

    st = SentenceTransformer(bundled_minilm_path(), device=device)

    def one_at_a_time() -> list[Any]:
        return [st.encode([t], normalize_embeddings=True)[0] for t in texts]

    t_base, base = timed(one_at_a_time)
    same = sum(float(a @ b) >= 0.9999 for a, b in zip(ours, base, strict=True))
    return "embed (MiniLM-L6, real)", len(texts), len(texts) / t_ours, len(texts) / t_base, same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-tokens", type=int, default=16384)
    ap.add_argument("--ct2", action="store_true", help="also the CTranslate2 backend")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = build_all(_cache_dir())

    def cfg(model: str) -> ModelConfig:
        return ModelConfig(model=model, generation=GREEDY, batch_tokens=args.batch_tokens)

    rows = []
    for kind in ("bart", "t5"):
        h = AbstractiveSummarizeHandler(cfg(paths[kind]))
        h.setup(args.device)
        rows.append(bench_seq2seq(f"summarize ({kind}, tiny)", h, {}, args.chunks))
    th = TranslateHandler(cfg(paths["marian_template"]))
    th.setup(args.device)
    params = {"source_lang": "en", "target_lang": "de"}
    rows.append(bench_seq2seq("translate (marian, tiny)", th, params, args.chunks))
    if args.ct2:
        ct2 = TranslateHandler(
            ModelConfig(
                model=convert_ct2(paths["marian"]),
                backend="ctranslate2",
                generation=GREEDY,
                batch_tokens=args.batch_tokens,
            )
        )
        ct2.setup(args.device)
        baseline = th.resolve("en", "de").model
        rows.append(bench_seq2seq("translate (marian, ct2)", ct2, params, args.chunks, baseline))
    rows.append(bench_embed(args.chunks, args.device))

    print(
        f"device={args.device} torch_threads={torch.get_num_threads()} greedy, "
        f"max_new_tokens={GREEDY.max_new_tokens}, batch_tokens={args.batch_tokens}"
    )
    head = ("handler", "chunks", "handler/s", "baseline/s", "ratio", "identical")
    print(f"{head[0]:<26} {head[1]:>6} {head[2]:>10} {head[3]:>11} {head[4]:>7} {head[5]:>10}")
    for name, n, ours, base, same in rows:
        print(f"{name:<26} {n:>6} {ours:>10.1f} {base:>11.1f} {ours / base:>6.2f}x {same:>5}/{n}")
    rates = {name: ours for name, _, ours, _, _ in rows}
    if "translate (marian, ct2)" in rates:
        ratio = rates["translate (marian, ct2)"] / rates["translate (marian, tiny)"]
        print(f"ctranslate2 backend / transformers backend (translate handler): {ratio:.2f}x")


if __name__ == "__main__":
    main()
