"""Abstractive summaries on tiny BART/T5 models the tests build: fidelity, map-reduce, worker.

Fidelity: what the system returns for a chunk (length-sorted, padded token-budget
batches) equals ``model.generate`` on that chunk alone with the same greedy settings.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from docbatch.schema.settings import GenerationConfig, ModelConfig
from docbatch.worker.batching import BatchRunner, plan_batches
from docbatch.worker.handlers.abstractive import AbstractiveSummarizeHandler
from docbatch.worker.handlers.base import Handler
from tests.fixtures import WorkerProcess, load_corpus, read_ndjson, wait_for_job
from tests.seq2seq_helpers import greedy_env, own_prefix, queue_prefix
from tests.tiny_models import tiny_models  # noqa: F401 - session fixture

GREEDY = GenerationConfig(num_beams=1, max_new_tokens=12, min_new_tokens=4)


def mixed_chunks(handler: Handler, params: dict) -> list:
    """>= 50 chunks from short docs and a long license: lengths from a few tokens to the limit."""
    docs = load_corpus("stdlib-docs.jsonl", 60) + load_corpus("licenses.jsonl", 1)
    chunks = [c for d in docs for c in handler.chunk_for(d["text"], params) if c.text.strip()]
    return chunks[:64]


def direct_generate(handler, texts: list[str]) -> list[str]:
    """What plain transformers gives for each text on its own (no batching, no padding)."""
    model, tok = handler.model.model, handler.model.tokenizer
    config = handler.model.generation_config(handler.generation)
    out = []
    for text in texts:
        enc = tok([text], return_tensors="pt")
        with torch.inference_mode():
            ids = model.generate(**enc, generation_config=config)
        out.append(tok.decode(ids[0], skip_special_tokens=True).strip())
    return out


def assert_batched_equals_alone(handler, chunks, params: dict) -> None:
    lengths = [c.tokens for c in chunks]
    budget = handler.batch_budget
    batches = plan_batches(lengths, budget, handler.config.max_batch_rows)
    # The point is batching with padding: several multi-row batches of unequal lengths.
    assert sum(1 for b in batches if len({lengths[i] for i in b}) > 1) >= 3, batches
    groups = [c.group for c in chunks]
    ours, failures, _ = BatchRunner(handler).run(
        [c.text for c in chunks], lengths, params, lambda: False, groups
    )
    assert failures == {}
    alone = direct_generate(handler, [handler.prefix + c.text.strip() for c in chunks])
    # Random weights: a few outputs decode to nothing, most must not.
    assert sum(bool(o) for o in alone) >= 0.8 * len(alone), alone
    mismatched = [(i, a, b) for i, (a, b) in enumerate(zip(ours, alone, strict=True)) if a != b]
    assert mismatched == [], mismatched[:3]


@pytest.mark.parametrize("kind", ["bart", "t5"])
def test_summaries_batched_equal_generate_alone(kind, tiny_models):  # noqa: F811
    handler = AbstractiveSummarizeHandler(
        ModelConfig(model=tiny_models[kind], generation=GREEDY, batch_tokens=700)
    )
    handler.setup("cpu")
    chunks = mixed_chunks(handler, {})
    assert len(chunks) >= 50
    assert min(c.tokens for c in chunks) < 20 < 80 < max(c.tokens for c in chunks)
    assert_batched_equals_alone(handler, chunks, {})


def test_map_reduce_folds_chunk_summaries(tiny_models):  # noqa: F811
    handler = AbstractiveSummarizeHandler(ModelConfig(model=tiny_models["bart"], generation=GREEDY))
    handler.setup("cpu")
    text = load_corpus("licenses.jsonl", 1)[0]["text"]
    chunks = handler.chunk_for(text, {})
    outputs = handler.predict([c.text for c in chunks], {})
    out = handler.reduce(text, chunks, outputs, {})
    # 12 tokens per chunk summary for dozens of chunks: more than one model input.
    assert len(chunks) > 20
    assert out.data["rounds"] >= 3
    assert out.data["summary"]
    assert "".join(text[s:e] for s, e, _ in out.data["chunks"]) == text


@pytest.fixture(scope="module")
def bart_worker(tiny_models) -> Iterator[tuple[WorkerProcess, str]]:  # noqa: F811
    prefix = own_prefix("bart")
    worker = WorkerProcess(
        "summarize",
        env={
            "DOCBATCH_QUEUE_PREFIX": prefix,
            "DOCBATCH_MODELS__SUMMARIZE__MODEL": tiny_models["bart"],
            **greedy_env("summarize"),
        },
        name="bart",
    ).wait_ready()
    yield worker, prefix
    worker.stop()


def test_abstractive_and_extractive_through_a_worker(api, bart_worker, tiny_models):  # noqa: F811
    worker, prefix = bart_worker
    docs = load_corpus("stdlib-docs.jsonl", 12) + load_corpus("licenses.jsonl", 1)
    with queue_prefix(prefix):
        auto = api.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs}).json()
        extractive = api.post(
            "/v1/jobs",
            json={"tasks": [{"type": "summarize", "method": "extractive"}], "documents": docs},
        ).json()
    assert wait_for_job(api, auto["id"])["status"] == "completed", worker.log[-3000:]
    assert wait_for_job(api, extractive["id"])["status"] == "completed"

    lines = read_ndjson(api.get(f"/v1/jobs/{auto['id']}/results"))
    assert [x["custom_id"] for x in lines] == [d["custom_id"] for d in docs]
    for line, doc in zip(lines, docs, strict=True):
        res = line["results"]["summarize"]
        assert res["output"]["method"] == "abstractive"
        assert res["output"]["summary"]
        assert res["model"]["id"] == tiny_models["bart"]
        gen = res["params"]["generation"]
        assert gen["num_beams"] == 1 and gen["max_new_tokens"] == 12
        # Every character of the document reached some chunk, in order, once.
        spans = res["output"]["chunks"]
        assert "".join(doc["text"][s:e] for s, e, _ in spans) == doc["text"]
    long_one = lines[-1]["results"]["summarize"]["output"]
    assert len(long_one["chunks"]) > 20 and long_one["rounds"] >= 2

    for line in read_ndjson(api.get(f"/v1/jobs/{extractive['id']}/results")):
        res = line["results"]["summarize"]
        assert res["output"]["method"] == "extractive"
        assert res["model"]["id"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_abstractive_without_a_model_names_the_setting(api, workers):
    docs = load_corpus("stdlib-docs.jsonl", 3)
    job = api.post(
        "/v1/jobs",
        json={"tasks": [{"type": "summarize", "method": "abstractive"}], "documents": docs},
    ).json()
    job = wait_for_job(api, job["id"])
    assert job["status"] == "failed"
    assert job["counts"]["summarize"]["failed"] == 3
    errors = read_ndjson(api.get(f"/v1/jobs/{job['id']}/errors"))
    assert len(errors) == 3
    for line in errors:
        assert "DOCBATCH_MODELS__SUMMARIZE__MODEL" in line["results"]["summarize"]["error"]
