"""Results retrieval: vectors as base64 and Parquet; tags scores equal direct encoding."""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.fixtures import load_corpus, read_ndjson, wait_for_job


def test_vectors_as_base64_and_parquet(api, workers):
    docs = load_corpus("stdlib-docs.jsonl")[100:104] + load_corpus("licenses.jsonl", 1)
    job_id = api.post(
        "/v1/jobs",
        json={"tasks": ["embed", {"type": "summarize", "method": "extractive"}], "documents": docs},
    ).json()["id"]
    assert wait_for_job(api, job_id)["status"] == "completed"
    floats = read_ndjson(api.get(f"/v1/jobs/{job_id}/results"))
    compact = api.get(f"/v1/jobs/{job_id}/results", params={"vectors": "base64"})
    packed = read_ndjson(compact)
    assert len(compact.content) < 0.6 * len(api.get(f"/v1/jobs/{job_id}/results").content)

    resp = api.get(f"/v1/jobs/{job_id}/results", params={"format": "parquet"})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(resp.content))
    assert table.column("custom_id").to_pylist() == [d["custom_id"] for d in docs]
    vec_type = table.schema.field("embed_vector").type
    assert isinstance(vec_type, pa.FixedSizeListType)
    assert (vec_type.list_size, vec_type.value_type) == (384, pa.float32())
    assert table.column("summarize_status").to_pylist() == ["succeeded"] * len(docs)
    pq_vectors = table.column("embed_vector").to_pylist()
    pq_chunks = table.column("embed_chunk_vectors").to_pylist()

    for i, (f, p) in enumerate(zip(floats, packed, strict=True)):
        fo, po = f["results"]["embed"]["output"], p["results"]["embed"]["output"]
        vec = np.frombuffer(base64.b64decode(po["vector_b64"]), dtype="<f4")
        chunks = np.frombuffer(base64.b64decode(po["chunk_vectors_b64"]), dtype="<f4")
        assert np.allclose(vec, fo["vector"], atol=1e-6)
        assert np.allclose(chunks.reshape(-1, po["dim"]), fo["chunk_vectors"], atol=1e-6)
        assert np.allclose(pq_vectors[i], fo["vector"], atol=1e-6)
        assert np.allclose(np.asarray(pq_chunks[i]), fo["chunk_vectors"], atol=1e-6)
        assert "vector" not in po and "vector_b64" not in fo
    assert len(pq_chunks[-1]) > 1  # the license has several chunks

    bad = api.get(f"/v1/jobs/{job_id}/results", params={"format": "xml"})
    assert bad.status_code == 422 and "format" in bad.text


def test_tag_scores_equal_direct_encoding(api, workers):
    from sentence_transformers import SentenceTransformer

    from docbatch.worker.handlers.minilm import bundled_minilm_path

    model = SentenceTransformer(bundled_minilm_path(), device="cpu")
    # Documents of one chunk, so the direct encoding sees the same text as the worker.
    docs = [
        d
        for d in load_corpus("stdlib-docs.jsonl")[200:260]
        if len(model.tokenizer(d["text"])["input_ids"]) < 200
    ][:10]
    labels = ["networking", "file system", "text processing", "concurrency", "mathematics"]
    job_id = api.post(
        "/v1/jobs",
        json={"tasks": [{"type": "tags", "labels": labels, "top_k": 5}], "documents": docs},
    ).json()["id"]
    assert wait_for_job(api, job_id)["status"] == "completed"
    label_vecs = model.encode(labels, normalize_embeddings=True)
    for line, doc in zip(read_ndjson(api.get(f"/v1/jobs/{job_id}/results")), docs, strict=True):
        tags = line["results"]["tags"]["output"]["tags"]
        assert sorted(t["label"] for t in tags) == sorted(labels)
        # A label's score is its cosine with the (one-chunk) document.
        doc_vec = model.encode([doc["text"]], normalize_embeddings=True)
        direct = dict(zip(labels, (doc_vec @ label_vecs.T).max(axis=0), strict=True))
        for t in tags:
            assert abs(t["score"] - float(direct[t["label"]])) < 1e-4, (t, direct)


def test_a_parquet_export_streams_row_group_by_row_group(api, database):
    """A million-document export takes minutes to build: it leaves row group by row group
    (no Content-Length, valid as a whole), and a reader that leaves stops the writer."""
    from bench.export import seed_job
    from docbatch.domain.export import iter_parquet
    from docbatch.schema.settings import get_settings

    job_id = seed_job(20_000, tenant="parquet-stream")
    stream = iter_parquet(job_id, ["embed"], page_size=500, settings=get_settings())
    first = next(stream)
    assert first.startswith(b"PAR1")
    whole = pq.ParquetFile(io.BytesIO(first + b"".join(stream)))
    assert whole.metadata.num_rows == 20_000
    assert whole.metadata.num_row_groups == 40  # one per page of 500

    left = iter_parquet(job_id, ["embed"], page_size=500, settings=get_settings())
    next(left)
    left.close()
    deadline = time.monotonic() + 30
    while any(t.name == "docbatch-parquet" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the Parquet writer outlived its reader"
        time.sleep(0.1)

    one = [{"custom_id": "one", "text": "one"}]
    job = api.post("/v1/jobs", json={"tasks": ["embed"], "documents": one})
    assert job.status_code == 202, job.text
    resp = api.get(f"/v1/jobs/{job.json()['id']}/results", params={"format": "parquet"})
    assert resp.status_code == 200 and "content-length" not in resp.headers
    assert pq.read_table(io.BytesIO(resp.content)).num_rows == 1


def test_a_parquet_page_reads_results_by_document_not_by_job(database):
    """Right after a big job ends the planner's statistics do not know it: a page's results
    must still be found through the (document_id, task) index, not by walking the job's
    whole (job_id, status) index once per page (quadratic: a million took 428 s)."""
    from sqlalchemy import select, text

    from bench.export import seed_job
    from docbatch.domain.export import page_results
    from docbatch.domain.results import index_scans_only
    from docbatch.schema.db import transaction
    from docbatch.schema.settings import get_settings
    from docbatch.schema.tables import Document, Result

    job_id = seed_job(20_000, tenant="parquet-plan", analyze=False)
    with transaction(get_settings()) as s:
        ids = list(
            s.scalars(
                select(Document.id)
                .where(Document.job_id == job_id)
                .order_by(Document.seq)
                .offset(15_000)
                .limit(500)
            )
        )

        def plan(statement) -> str:
            sql = statement.compile(s.get_bind(), compile_kwargs={"literal_binds": True})
            return "\n".join(r[0] for r in s.execute(text(f"EXPLAIN {sql}")))

        index_scans_only(s, get_settings())
        by_job_too = plan(page_results(ids).where(Result.job_id == job_id))
        assert "ix_results_job_status" in by_job_too  # the trap this guards against
        page = plan(page_results(ids))
        assert "uq_results_document_task" in page and "ix_results_job_status" not in page
        assert len(list(s.scalars(page_results(ids)))) == 500
