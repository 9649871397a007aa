"""The whole path with real Postgres, Redis, worker processes and the bundled MiniLM."""

from __future__ import annotations

import time

import numpy as np
from sqlalchemy import func, select

from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Result
from tests.fakeworkers import fake_worker_env
from tests.fixtures import WorkerProcess, load_corpus, read_ndjson, wait_for_job


def _assert_accounted(job: dict) -> None:
    for task, c in job["counts"].items():
        assert c["succeeded"] + c["failed"] + c["cancelled"] == c["total"] == job["documents"], (
            task,
            c,
        )


def _one_result_per_document_and_task(job_id: str) -> None:
    with new_session(get_settings()) as s:
        dupes = s.execute(
            select(Result.document_id, Result.task, func.count())
            .where(Result.job_id == job_id)
            .group_by(Result.document_id, Result.task)
            .having(func.count() > 1)
        ).all()
    assert dupes == []


def test_fifty_documents_tags_and_summarize(api, workers):
    docs = load_corpus("stdlib-docs.jsonl", 50)
    resp = api.post(
        "/v1/jobs",
        json={"tasks": [{"type": "tags"}, {"type": "summarize"}], "documents": docs},
    )
    assert resp.status_code == 202, resp.text
    job = wait_for_job(api, resp.json()["id"])
    assert job["status"] == "completed", job
    _assert_accounted(job)
    assert job["counts"]["tags"]["succeeded"] == 50
    assert job["counts"]["summarize"]["succeeded"] == 50
    lines = read_ndjson(api.get(f"/v1/jobs/{job['id']}/results"))
    assert [line["custom_id"] for line in lines] == [d["custom_id"] for d in docs]
    for line, doc in zip(lines, docs, strict=True):
        tags = line["results"]["tags"]
        assert tags["status"] == "succeeded"
        assert 1 <= len(tags["output"]["tags"]) <= 5
        assert tags["model"]["id"] == "sentence-transformers/all-MiniLM-L6-v2"
        summary = line["results"]["summarize"]["output"]["summary"]
        assert summary and len(summary) <= len(doc["text"])
        # extractive: every summary word comes from the document
        assert set(summary.split()) <= set(doc["text"].split())
    _one_result_per_document_and_task(job["id"])
    assert read_ndjson(api.get(f"/v1/jobs/{job['id']}/errors")) == []


def test_caller_labels_ranked_by_similarity(api, workers):
    docs = [
        {"custom_id": "net", "text": "Open a TCP socket, connect to the server and send bytes."},
        {"custom_id": "math", "text": "Return the square root of x as a floating point number."},
    ]
    labels = ["networking", "mathematics", "cooking"]
    job_id = api.post(
        "/v1/jobs",
        json={"tasks": [{"type": "tags", "labels": labels, "top_k": 3}], "documents": docs},
    ).json()["id"]
    assert wait_for_job(api, job_id)["status"] == "completed"
    lines = {x["custom_id"]: x for x in read_ndjson(api.get(f"/v1/jobs/{job_id}/results"))}
    assert lines["net"]["results"]["tags"]["output"]["tags"][0]["label"] == "networking"
    assert lines["math"]["results"]["tags"]["output"]["tags"][0]["label"] == "mathematics"


def test_results_readable_while_the_job_runs(api, private_queues, settings_override):
    settings_override.set(unit_max_documents="3")
    worker = WorkerProcess("summarize", env=fake_worker_env(private_queues, sleep=0.3)).wait_ready()
    docs = load_corpus("stdlib-docs.jsonl", 30)
    job_id = api.post(
        "/v1/jobs", json={"tasks": [{"type": "summarize"}], "documents": docs}
    ).json()["id"]
    job = wait_for_job(api, job_id, until={"running"})
    deadline = time.monotonic() + 120
    while job["counts"]["summarize"]["succeeded"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
        job = api.get(f"/v1/jobs/{job_id}").json()
    lines = read_ndjson(api.get(f"/v1/jobs/{job_id}/results"))
    statuses = [x["results"]["summarize"]["status"] for x in lines]
    assert len(lines) == 30
    assert "succeeded" in statuses and "pending" in statuses, "expected a partial view"
    done = [x for x in lines if x["results"]["summarize"]["status"] == "succeeded"]
    assert done[0]["results"]["summarize"]["output"]["summary"].isupper()
    assert wait_for_job(api, job_id)["status"] == "completed"
    worker.stop()


def test_embed_equals_direct_sentence_transformers_encode(api, workers):
    from sentence_transformers import SentenceTransformer

    from docbatch.worker.handlers.minilm import bundled_minilm_path

    docs = load_corpus("stdlib-docs.jsonl")[50:70] + load_corpus("licenses.jsonl", 2)
    job_id = api.post("/v1/jobs", json={"tasks": ["embed"], "documents": docs}).json()["id"]
    assert wait_for_job(api, job_id)["status"] == "completed"
    model = SentenceTransformer(bundled_minilm_path(), device="cpu")
    lines = read_ndjson(api.get(f"/v1/jobs/{job_id}/results"))
    for line, doc in zip(lines, docs, strict=True):
        out = line["results"]["embed"]["output"]
        chunk_texts = [doc["text"][s:e] for s, e, _ in out["chunks"]]
        assert "".join(chunk_texts) == doc["text"]
        direct = model.encode(chunk_texts, normalize_embeddings=True)
        ours = np.asarray(out["chunk_vectors"], dtype=np.float32)
        cos = (ours * direct).sum(axis=1) / (
            np.linalg.norm(ours, axis=1) * np.linalg.norm(direct, axis=1)
        )
        assert cos.min() >= 0.9999, (doc["custom_id"], cos.min())
        assert len(out["vector"]) == out["dim"] == 384
        assert abs(np.linalg.norm(out["vector"]) - 1.0) < 1e-4
