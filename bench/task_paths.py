"""Every task near its model's limit: the whole path vs the same model calls made directly.

For each task setup (keyphrase tags, label tags, label tags with an NLI model, extractive
summarize, abstractive summarize and translate on the tiny models), one real worker
runs a job on the stdlib corpus through the api (claim, chunk, batch, predict, reduce,
write); its steady state is first unit claimed -> last unit done. The reference runs
the same model calls on the same inputs in this process, well batched (length-sorted,
token budget) and nothing else: the chunk encodes or generations, plus for keyphrases the
encodes of the corpus's distinct candidate phrases, plus for NLI every (chunk, label) pair.
Figure: reference seconds / whole-path seconds (target >= 0.8), same torch threads.

    python -m bench.run --only task_paths --stdlib-docs 40   # a quick check on small input
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Greedy and short on the tiny random models (they rarely stop on their own); the worker
# gets the same settings through the environment.
GREEDY_ENV = json.dumps({"num_beams": 1, "max_new_tokens": 16, "min_new_tokens": 4})
LABELS = ["networking", "file system", "text processing", "concurrency", "data formats"]


def build_tiny_nli(out: Path) -> str:
    """A tiny random BERT NLI classifier on MiniLM's tokenizer (as tests/test_tags_nli.py)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from docbatch.worker.handlers.minilm import bundled_minilm_path

    if (out / "config.json").exists():
        return str(out)
    tok = AutoTokenizer.from_pretrained(bundled_minilm_path())
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label={0: "contradiction", 1: "neutral", 2: "entailment"},
        label2id={"contradiction": 0, "neutral": 1, "entailment": 2},
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def _budget_batches(lengths: list[int], budget: int = 4096) -> list[list[int]]:
    from docbatch.worker.batching import plan_batches

    return plan_batches(lengths, budget)


_MINILM: Any = None


def direct_minilm(texts: list[str]) -> float:
    """Seconds for the handler's own encoder on ``texts`` in length-sorted batches: the same
    model calls the task makes (for the bundled MiniLM that is tokenize + forward + pool on
    transformers, which is faster than ``SentenceTransformer.encode``)."""
    import torch

    from docbatch.schema.settings import ModelConfig
    from docbatch.worker.handlers.minilm import SentenceEncoderHandler

    global _MINILM
    if _MINILM is None:
        _MINILM = SentenceEncoderHandler(ModelConfig())
        _MINILM.setup("cpu")
    h = _MINILM
    lengths = [len(x) for x in h.tokenizer(texts, truncation=True)["input_ids"]]
    h.model.encode(texts[:8], batch_size=8)  # warm-up
    t0 = time.perf_counter()
    with torch.inference_mode():
        for batch in _budget_batches(lengths):
            h.model.encode(
                [texts[i] for i in batch],
                batch_size=len(batch),
                normalize_embeddings=True,
                convert_to_numpy=True,
            )
    return time.perf_counter() - t0


def direct_nli(path: str, chunks: list[str], labels: list[str]) -> float:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    pairs = [(c, f"This example is {label}.") for c in chunks for label in labels]
    enc = tok([p for p, _ in pairs], [q for _, q in pairs])
    lengths = [len(x) for x in enc["input_ids"]]
    t0 = time.perf_counter()
    for batch in _budget_batches(lengths):
        padded = tok(
            [pairs[i][0] for i in batch],
            [pairs[i][1] for i in batch],
            padding=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            model(**padded).logits.softmax(-1)
    return time.perf_counter() - t0


def direct_seq2seq(
    model: Any,
    prefix: str,
    gen: dict[str, Any],
    texts: list[str],
    lengths: list[int],
    budget: int,
    docs_of: list[int] | None = None,
    fold: Callable[[list[list[str]]], None] | None = None,
) -> float:
    """The handler's model, tokenizer and generation settings: tokenize, generate, decode,
    in length-sorted token-budget batches. With ``docs_of`` (the document of each text),
    also the reduce step of map-reduce summaries: ``fold`` (the handler's own batched
    folding, every round, over all documents at once) gets every document's chunk
    summaries; without it, one round of the joins that fit one model input (what this
    reference did before 2026-12-07: documents needing more rounds were left out)."""
    t0 = time.perf_counter()
    outs = [""] * len(texts)
    for batch in _budget_batches(lengths, budget):
        made = model.generate([prefix + texts[i].strip() for i in batch], gen)
        for i, o in zip(batch, made, strict=True):
            outs[i] = o
    if docs_of is not None:
        per_doc: dict[int, list[str]] = {}
        for d, o in zip(docs_of, outs, strict=True):
            if o:
                per_doc.setdefault(d, []).append(o)
        if fold is not None:
            fold(list(per_doc.values()))
            return time.perf_counter() - t0
        joined = ["\n".join(s) for s in per_doc.values() if len(s) > 1]
        sizes = [len(x) for x in model.tokenizer(joined)["input_ids"]] if joined else []
        limit = model.input_limit()
        joined = [j for j, n in zip(joined, sizes, strict=True) if n <= limit]
        sizes = [n for n in sizes if n <= limit]
        for batch in _budget_batches(sizes, budget):
            model.generate([prefix + joined[i] for i in batch], gen)
    return time.perf_counter() - t0


def worker_model_seconds(port: int, task: str) -> float:
    """The worker's docbatch_worker_model_latency_seconds sum so far (its /metrics)."""
    import httpx

    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    # Labelled {task=..., model=...} since deployments: match the task label, not the braces.
    prefix, label = "docbatch_worker_model_latency_seconds_sum{", f'task="{task}"'
    return sum(
        float(line.split()[-1])
        for line in body.splitlines()
        if line.startswith(prefix) and label in line.split("}")[0]
    )


def _chunks(handler: Any, docs: list[dict[str, Any]], params: dict[str, Any]) -> list[Any]:
    return [c for d in docs for c in handler.chunk_for(d["text"], params) if c.text.strip()]


def run(bench: Any, row: Callable[..., None]) -> None:
    import torch

    from bench.cluster import start_workers, steady_window, stop_all
    from docbatch.schema.settings import GenerationConfig, ModelConfig
    from docbatch.worker.handlers.abstractive import AbstractiveSummarizeHandler
    from docbatch.worker.handlers.minilm import SentenceEncoderHandler
    from docbatch.worker.handlers.tags import candidate_phrases
    from docbatch.worker.handlers.translate import TranslateHandler
    from tests.tiny_models import _cache_dir, build_all

    torch.set_num_threads(bench.threads)
    GREEDY = GenerationConfig(**json.loads(GREEDY_ENV))
    docs = bench.stdlib
    tiny = build_all(_cache_dir())
    nli = build_tiny_nli(bench.tmp / "tiny-nli")
    minilm = SentenceEncoderHandler(ModelConfig())
    minilm.setup("cpu")

    def minilm_chunks(params: dict[str, Any], sentences: bool = False) -> list[str]:
        if sentences:
            from docbatch.worker.handlers.summarize import ExtractiveSummarizeHandler

            ext = ExtractiveSummarizeHandler(ModelConfig())
            ext.tokenizer, ext.model = minilm.tokenizer, minilm.model
            return [c.text for c in _chunks(ext, docs, params)]
        return [c.text for c in _chunks(minilm, docs, params)]

    one_round: dict[str, float] = {}  # the abstractive reference as it was measured before

    def seq2seq_direct(cls: Any, model: str, params: dict[str, Any]) -> float:
        from docbatch.worker.handlers.base import UnitDocument

        h = cls(ModelConfig(model=model, generation=GREEDY))
        h.setup("cpu")
        per_doc = [[c for c in h.chunk_for(d["text"], params) if c.text.strip()] for d in docs]
        chunks = [c for cs in per_doc for c in cs]
        docs_of = [n for n, cs in enumerate(per_doc) for _ in cs]
        texts, lengths = [c.text for c in chunks], [c.tokens for c in chunks]
        if isinstance(h, TranslateHandler):
            m = h.resolve(params["source_lang"], params["target_lang"]).model
            return direct_seq2seq(m, "", h.generation, texts, lengths, h.batch_budget)
        one_round[model] = direct_seq2seq(
            h.model, h.prefix, h.generation, texts, lengths, h.batch_budget, docs_of
        )

        def fold(summaries: list[list[str]]) -> None:
            h.prepare_reduce([UnitDocument("", [], s) for s in summaries], params)

        return direct_seq2seq(
            h.model, h.prefix, h.generation, texts, lengths, h.batch_budget, docs_of, fold
        )

    phrases = list(dict.fromkeys(p for d in docs for p in candidate_phrases(d["text"])))
    cases: list[tuple[str, str, dict[str, Any], dict[str, str], Callable[[], float]]] = [
        (
            "tags, keyphrases (MiniLM)",
            "tags",
            {"type": "tags"},
            {},
            lambda: direct_minilm(minilm_chunks({})) + direct_minilm(phrases),
        ),
        (
            "tags, labels (MiniLM similarity)",
            "tags",
            {"type": "tags", "labels": LABELS},
            {},
            lambda: direct_minilm(minilm_chunks({})),
        ),
        (
            "tags, labels + NLI (tiny BERT NLI)",
            "tags",
            {"type": "tags", "labels": LABELS},
            {"DOCBATCH_MODELS__TAGS__PARAMS": json.dumps({"nli_model": nli})},
            lambda: direct_minilm(minilm_chunks({})) + direct_nli(nli, minilm_chunks({}), LABELS),
        ),
        (
            "summarize, extractive (MiniLM)",
            "summarize",
            {"type": "summarize", "method": "extractive"},
            {},
            lambda: direct_minilm(minilm_chunks({}, sentences=True)),
        ),
        (
            "summarize, abstractive (tiny BART)",
            "summarize",
            {"type": "summarize", "method": "abstractive"},
            {
                "DOCBATCH_MODELS__SUMMARIZE__MODEL": tiny["bart"],
                "DOCBATCH_MODELS__SUMMARIZE__GENERATION": GREEDY_ENV,
            },
            lambda: seq2seq_direct(AbstractiveSummarizeHandler, tiny["bart"], {}),
        ),
        (
            "translate en->de (tiny Marian)",
            "translate",
            {"type": "translate", "source_lang": "en", "target_lang": "de"},
            {
                "DOCBATCH_MODELS__TRANSLATE__MODEL": tiny["marian_template"],
                "DOCBATCH_MODELS__TRANSLATE__GENERATION": GREEDY_ENV,
            },
            lambda: seq2seq_direct(
                TranslateHandler,
                tiny["marian_template"],
                {"source_lang": "en", "target_lang": "de"},
            ),
        ),
    ]
    only = getattr(bench.args, "task_cases", None)
    for name, task, spec, env, direct in cases:
        if only and not any(o in name for o in only):
            continue
        from docbatch.processes import free_port

        port = free_port()
        extra = {**bench.worker_env, **env, "DOCBATCH_WORKER_METRICS_PORT": str(port)}
        workers = start_workers(bench.env, task, 1, extra, task)
        model_s = [0.0, 0.0]  # the worker's own model-call seconds after each job
        try:
            # A one-document job first: translate loads a pair's model on first use, and
            # steady state should not include that.
            for k, part in enumerate((docs[:1], docs)):
                resp = bench.api.client.post(
                    "/v1/jobs",
                    json={
                        "name": name,
                        "tasks": [spec],
                        "documents": [
                            {"custom_id": d["custom_id"], "text": d["text"]} for d in part
                        ],
                    },
                )
                assert resp.status_code == 202, resp.text[:500]
                job = bench.api.wait(resp.json()["id"])
                model_s[k] = worker_model_seconds(port, task)
        finally:
            stop_all(workers)
        in_worker = model_s[1] - model_s[0]
        c = job["counts"][task]
        assert c["succeeded"] == len(docs), (name, c)
        steady, chunks, tokens = steady_window(job["id"])
        one_round.clear()
        reference = direct()
        ratio = reference / steady
        before = "".join(
            f"; the reference with one reduce round only (as measured before 2026-12-07) "
            f"{s:.2f}s, ratio {s / steady:.3f}"
            for s in one_round.values()
        )
        row(
            f"task vs direct model calls: {name}",
            ratio,
            ">= 0.8",
            ratio >= 0.8,
            f"{len(docs)} docs, {chunks} chunks, {tokens} tokens: whole path (1 worker, "
            f"{bench.threads} threads) first claim -> last unit done {steady:.2f}s vs the "
            f"same model calls made directly, length-sorted token-budget batches "
            f"{reference:.2f}s; the worker's own model calls (batch latency metric) took "
            f"{in_worker:.2f}s of its {steady:.2f}s{before}",
        )


def three_tasks(bench: Any, row: Callable[..., None]) -> None:
    """embed + tags + summarize at once, one worker each, on this box's cores: the job's
    first claim -> last unit done vs the sum of the three direct runs' model time."""
    import torch

    from bench.cluster import start_workers, steady_window, stop_all
    from docbatch.schema.settings import ModelConfig
    from docbatch.worker.handlers.minilm import SentenceEncoderHandler
    from docbatch.worker.handlers.summarize import ExtractiveSummarizeHandler
    from docbatch.worker.handlers.tags import candidate_phrases
    from docbatch.worker.threads import available_cores

    docs = bench.stdlib
    # Each worker takes its share of the cores (worker/threads.py): a third while all three
    # run, more once the others are idle (the shared folder, as `docbatch run` sets it).
    env = {
        **bench.worker_env,
        "DOCBATCH_TORCH_THREADS": "0",
        "DOCBATCH_WORKERS_PER_HOST": "3",
        "DOCBATCH_CORE_SHARE_DIR": str(bench.tmp / "cores"),
    }
    tasks = ("embed", "tags", "summarize")
    workers = [w for t in tasks for w in start_workers(bench.env, t, 1, env, t)]
    try:
        resp = bench.api.client.post(
            "/v1/jobs",
            json={
                "name": "three tasks",
                "tasks": ["embed", "tags", {"type": "summarize", "method": "extractive"}],
                "documents": [{"custom_id": d["custom_id"], "text": d["text"]} for d in docs],
            },
        )
        assert resp.status_code == 202, resp.text[:500]
        job = bench.api.wait(resp.json()["id"], timeout=3600)
    finally:
        stop_all(workers)
    assert all(job["counts"][t]["succeeded"] == len(docs) for t in tasks), job["counts"]
    together, chunks, tokens = steady_window(job["id"])

    torch.set_num_threads(bench.threads)
    h = SentenceEncoderHandler(ModelConfig())
    h.setup("cpu")
    ext = ExtractiveSummarizeHandler(ModelConfig())
    ext.tokenizer, ext.model = h.tokenizer, h.model
    chunk_texts = [c.text for c in _chunks(h, docs, {})]
    sentences = [c.text for c in _chunks(ext, docs, {})]
    phrases = list(dict.fromkeys(p for d in docs for p in candidate_phrases(d["text"])))
    direct = {
        "embed": direct_minilm(chunk_texts),
        "tags": direct_minilm(chunk_texts) + direct_minilm(phrases),
        "summarize": direct_minilm(sentences),
    }
    total = sum(direct.values())
    ratio = together / total
    row(
        "three tasks at once (embed + tags + summarize) / sum of direct model time",
        ratio,
        "<= 1.3",
        ratio <= 1.3,
        f"{len(docs)} docs, {available_cores()} cores, one worker per task (default threads "
        f"with DOCBATCH_CORE_SHARE_DIR: cores // busy workers): first claim -> last unit done "
        f"{together:.2f}s vs direct "
        + ", ".join(f"{t} {s:.2f}s" for t, s in direct.items())
        + f" ({bench.threads} threads each; sum {total:.2f}s)",
    )
