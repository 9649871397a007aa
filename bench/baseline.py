"""The usual design, as a baseline: one Celery task per document, a transformers
``pipeline`` called per document, results in the Celery result backend (Redis).
For seq2seq, transformers 5 has no summarization pipeline any more; the baseline uses
``bench.handlers.PlainSeq2SeqPipeline``, which does what that pipeline did.

Its own Celery app and queue (``bench.baseline``), on the bench's Redis db index,
started as its own worker process (prefork, concurrency 1, acks_late, prefetch 1,
torch threads as docbatch's worker)::

    BASELINE_KIND=embed python -m celery -A bench.baseline worker -Q bench.baseline -c 1

Each task chunks its document with the model's tokenizer (the same chunks docbatch
makes), so both designs do the same work: every chunk of every document.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

QUEUE = "bench.baseline"
BROKER = os.environ.get("DOCBATCH_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery("docbatch_baseline", broker=BROKER, backend=BROKER)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
_state: dict[str, Any] = {}


def load() -> dict[str, Any]:
    if _state:
        return _state
    import torch
    from transformers import pipeline

    threads = int(os.environ.get("DOCBATCH_TORCH_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    kind = os.environ.get("BASELINE_KIND", "embed")
    model = os.environ.get("BASELINE_MODEL", "")
    if kind == "embed":
        from docbatch.worker.handlers.minilm import bundled_minilm_path

        model = model or bundled_minilm_path()
        pipe = pipeline("feature-extraction", model=model, device="cpu")
        limit = 254
    else:
        # transformers 5 removed the "summarization" pipeline; this is what it did.
        from bench.handlers import PlainSeq2SeqPipeline

        pipe = PlainSeq2SeqPipeline(model, device="cpu")
        limit = 510
    _state.update(pipe=pipe, kind=kind, limit=limit)
    return _state


@worker_process_init.connect
def _load(**_: Any) -> None:
    load()


def _chunks(text: str) -> list[str]:
    from docbatch.worker.chunking import chunk_text

    st = load()
    return [c.text for c in chunk_text(text, st["pipe"].tokenizer, st["limit"])]


@app.task(name="baseline.embed_document", acks_late=True)
def embed_document(text: str) -> list[float]:
    """Mean-pooled, normalised MiniLM vectors per chunk, token-weighted into one vector."""
    import numpy as np

    st = load()
    chunks = _chunks(text)
    vectors, weights = [], []
    for features in st["pipe"](chunks):
        tokens = np.asarray(features[0], dtype=np.float32)  # [seq, dim], batch of one
        v = tokens.mean(axis=0)
        vectors.append(v / max(float(np.linalg.norm(v)), 1e-12))
        weights.append(len(tokens))
    doc = (np.stack(vectors) * np.asarray(weights, dtype=np.float32)[:, None]).sum(axis=0)
    return [float(x) for x in doc / max(float(np.linalg.norm(doc)), 1e-12)]


@app.task(name="baseline.summarize_document", acks_late=True)
def summarize_document(text: str) -> str:
    from bench.handlers import generation_kwargs

    st = load()
    outs = st["pipe"](_chunks(text), **generation_kwargs())
    return " ".join(o["summary_text"] for o in outs)
