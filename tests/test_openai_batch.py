"""The OpenAI Batch API, driven by the official ``openai`` client against a real api.

A real ``docbatch api`` (uvicorn), the session's real MiniLM embed worker, Postgres and
Redis; the client is ``OpenAI(base_url=..., api_key=<docbatch key>)``, unchanged.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from docbatch.schema.settings import get_settings
from tests.fixtures import ARTIFACTS, load_corpus, new_api_key, spawn, stop_process
from tests.procs import ApiProcess

TERMINAL = {"completed", "failed", "expired", "cancelled"}


@pytest.fixture(scope="module")
def beat(database: str) -> Iterator[None]:
    """A real ``docbatch beat`` whose batch tick runs every second (on the session's
    workers, which read the maintenance queue): batches are finalized and expired there."""
    schedule = ARTIFACTS / f"beat-batches-{secrets.token_hex(3)}"
    proc = spawn(
        ["beat", "--schedule", str(schedule)],
        f"{schedule.name}.log",
        {"DOCBATCH_BATCH_TICK_SECONDS": "1"},
    )
    yield
    stop_process(proc)
    for leftover in ARTIFACTS.glob(f"{schedule.name}*"):
        leftover.unlink()


@pytest.fixture(scope="module")
def api_url(database: str, beat: None) -> Iterator[str]:
    proc = ApiProcess({}).wait_ready()
    yield proc.url
    proc.stop()


def _tick_until(client: openai.OpenAI, batch_id: str, timeout: float = 60) -> Any:
    """The beat's batch tick, run here until the batch ends: for an api whose queues no
    worker reads (so no worker runs the beat's tick for it either)."""
    from docbatch.schema.settings import get_settings
    from docbatch.worker.batches import tick

    deadline = time.monotonic() + timeout
    while True:
        tick(get_settings())
        batch = client.batches.retrieve(batch_id)
        if batch.status in TERMINAL:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch}"
        time.sleep(0.3)


def _client(url: str, tenant: str = "default") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=new_api_key(tenant), max_retries=0)


def _jsonl(requests: list[dict[str, Any]]) -> io.BytesIO:
    data = "".join(json.dumps(r) + "\n" for r in requests).encode()
    return io.BytesIO(data)


def _wait(client: openai.OpenAI, batch_id: str, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in TERMINAL:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch}"
        time.sleep(0.5)


def _lines(content: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in content.decode().splitlines() if line.strip()]


def test_embeddings_batch_end_to_end(api_url, workers):
    from sentence_transformers import SentenceTransformer

    from docbatch.worker.handlers.minilm import bundled_minilm_path

    client = _client(api_url)
    docs = load_corpus("stdlib-docs.jsonl", 12)
    requests = [
        {
            "custom_id": d["custom_id"],
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "all-MiniLM-L6-v2", "input": d["text"][:600]},
        }
        for d in docs
    ]
    requests[1]["body"]["encoding_format"] = "base64"
    requests[2]["body"]["input"] = [docs[2]["text"][:300], "A second input on one line."]
    requests.append(
        {
            "custom_id": "bad-model",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "no-such-model", "input": "hello"},
        }
    )
    uploaded = client.files.create(file=("requests.jsonl", _jsonl(requests)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.status == "processed"
    assert client.files.retrieve(uploaded.id).bytes == uploaded.bytes > 0
    assert uploaded.id in {f.id for f in client.files.list(purpose="batch")}

    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/embeddings",
        completion_window="24h",
        metadata={"run": "nightly"},
    )
    assert batch.status == "in_progress" and batch.request_counts.total == len(requests)
    assert batch.metadata == {"run": "nightly"}
    # As OpenAI: no file ids until the batch ends (scripts poll on output_file_id) ...
    assert batch.output_file_id is None and batch.error_file_id is None and batch.usage is None
    # ... unless the early, partial read is asked for: the output file grows until the end.
    early = client.batches.retrieve(batch.id, extra_query={"partial_files": "true"})
    assert early.output_file_id
    client.files.content(early.output_file_id).read()

    done = _wait(client, batch.id)
    assert done.status == "completed", done
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (len(requests), len(docs), 1)
    assert done.completed_at and done.output_file_id and done.error_file_id

    output = _lines(client.files.content(done.output_file_id).read())
    assert sorted(o["custom_id"] for o in output) == sorted(d["custom_id"] for d in docs)
    # batch.usage: the tokens the model read, as the lines' usage adds them up.
    read = sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in output)
    assert done.usage is not None and done.usage.input_tokens == read > 0
    assert (done.usage.output_tokens, done.usage.total_tokens) == (0, read)
    model = SentenceTransformer(bundled_minilm_path(), device="cpu")
    by_id = {r["custom_id"]: r for r in requests}
    for line in output:
        assert line["error"] is None and line["id"].startswith("batch_req_")
        response = line["response"]
        assert response["status_code"] == 200 and response["request_id"]
        body = response["body"]
        assert body["object"] == "list" and body["model"] == "all-MiniLM-L6-v2"
        assert body["usage"]["prompt_tokens"] > 0
        inputs = by_id[line["custom_id"]]["body"]["input"]
        inputs = [inputs] if isinstance(inputs, str) else inputs
        assert [d["index"] for d in body["data"]] == list(range(len(inputs)))
        direct = model.encode(inputs, normalize_embeddings=True)
        for item, want in zip(body["data"], direct, strict=True):
            got = item["embedding"]
            if isinstance(got, str):  # encoding_format=base64: little-endian float32
                got = np.frombuffer(base64.b64decode(got), dtype="<f4")
            got = np.asarray(got, dtype=np.float32)
            cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
            assert cosine >= 0.9999, (line["custom_id"], cosine)
    assert isinstance(
        next(o for o in output if o["custom_id"] == docs[1]["custom_id"])["response"]["body"][
            "data"
        ][0]["embedding"],
        str,
    )

    [error] = _lines(client.files.content(done.error_file_id).read())
    assert error["custom_id"] == "bad-model"
    assert error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["code"] == "model_not_found"
    assert "DOCBATCH_OPENAI_MODELS" in error["response"]["body"]["error"]["message"]

    # The batch is a view of an ordinary job: /v1/jobs sees the same documents.
    extra = done.model_extra or {}
    assert extra.get("docbatch_job_id", "").startswith("job_")

    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_a_bad_line_is_rejected_naming_it(api_url, database):
    client = _client(api_url)
    before = {f.id for f in client.files.list()}
    good = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}
    data = json.dumps(good) + "\n" + json.dumps({**good, "custom_id": "b"}) + "\n{not json\n"
    with pytest.raises(openai.BadRequestError) as bad:
        client.files.create(file=("r.jsonl", io.BytesIO(data.encode())), purpose="batch")
    assert "line 3" in bad.value.message
    assert bad.value.code == "invalid_json_line"
    dup = json.dumps(good) + "\n" + json.dumps(good) + "\n"
    with pytest.raises(openai.BadRequestError) as bad:
        client.files.create(file=("r.jsonl", io.BytesIO(dup.encode())), purpose="batch")
    assert bad.value.code == "duplicate_custom_id" and "line 2" in bad.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.files.create(file=("r.jsonl", io.BytesIO(b"")), purpose="batch")
    assert bad.value.code == "empty_file"
    # Nothing half-written stays behind.
    assert {f.id for f in client.files.list()} == before


def test_url_mismatch_fails_the_batch(api_url, database):
    client = _client(api_url)
    requests = [
        {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}},
        {"custom_id": "b", "method": "POST", "url": "/v1/docbatch/tags", "body": {"text": "y"}},
    ]
    f = client.files.create(file=("r.jsonl", _jsonl(requests)), purpose="batch")
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    assert batch.status == "failed" and batch.failed_at
    [err] = batch.errors.data
    assert (err.code, err.line, err.param) == ("url_mismatch", 2, "url")
    with pytest.raises(openai.BadRequestError) as bad:
        client.batches.create(input_file_id=f.id, endpoint="/v1/nope", completion_window="24h")
    assert bad.value.param == "endpoint"


def test_other_tenants_files_and_batches_are_404(api_url, database):
    mine, theirs = _client(api_url), _client(api_url, tenant=f"t{secrets.token_hex(3)}")
    requests = [
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/docbatch/tags",
            "body": {"text": "An unanswered request.", "labels": ["x"]},
        }
    ]
    f = mine.files.create(file=("r.jsonl", _jsonl(requests)), purpose="batch")
    batch = mine.batches.create(
        input_file_id=f.id, endpoint="/v1/docbatch/tags", completion_window="24h"
    )
    for call in (
        lambda: theirs.files.retrieve(f.id),
        lambda: theirs.files.content(f.id),
        lambda: theirs.files.delete(f.id),
        lambda: theirs.batches.retrieve(batch.id),
        lambda: theirs.batches.cancel(batch.id),
        lambda: theirs.batches.create(
            input_file_id=f.id, endpoint="/v1/docbatch/tags", completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert f.id not in {x.id for x in theirs.files.list()}
    assert batch.id not in {b.id for b in theirs.batches.list()}
    mine.batches.cancel(batch.id)


def test_cancel_and_list_with_pagination(database, tmp_path):
    """No worker serves this api's queues: batches wait, and cancel ends them."""
    proc = ApiProcess({"DOCBATCH_QUEUE_PREFIX": f"t{secrets.token_hex(4)}"}).wait_ready()
    try:
        client = _client(proc.url, tenant=f"t{secrets.token_hex(3)}")
        requests = [
            {
                "custom_id": f"doc-{i}",
                "method": "POST",
                "url": "/v1/docbatch/summarize",
                "body": {"text": f"Document number {i}. It has two sentences.", "max_sentences": 1},
            }
            for i in range(5)
        ]
        f = client.files.create(file=("r.jsonl", _jsonl(requests)), purpose="batch")
        created = [
            client.batches.create(
                input_file_id=f.id, endpoint="/v1/docbatch/summarize", completion_window="24h"
            )
            for _ in range(3)
        ]
        assert all(b.status == "in_progress" for b in created)
        page = client.batches.list(limit=2)
        assert len(page.data) == 2 and page.has_more
        # The client follows ``after`` through every page, newest first.
        assert [b.id for b in client.batches.list(limit=2)] == [b.id for b in created[::-1]]

        cancelled = client.batches.cancel(created[0].id)
        assert cancelled.status in ("cancelling", "cancelled", "finalizing")
        done = _tick_until(client, created[0].id)
        assert done.status == "cancelled" and done.cancelled_at and done.cancelling_at
        counts = done.request_counts
        assert (counts.total, counts.completed, counts.failed) == (5, 0, 5)
        errors = _lines(client.files.content(done.error_file_id).read())
        assert sorted(e["custom_id"] for e in errors) == [f"doc-{i}" for i in range(5)]
        assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
        assert _lines(client.files.content(done.output_file_id).read()) == []
        for b in created[1:]:
            client.batches.cancel(b.id)
    finally:
        proc.stop()


def test_the_readme_script_runs_unchanged(api_url, workers, tmp_path):
    import os
    import re
    import subprocess
    import sys

    from tests.fixtures import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Coming from the OpenAI Batch API") :]
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "all-MiniLM-L6-v2", "input": f"Open socket number {i}."},
        }
        for i in range(3)
    ]
    (tmp_path / "requests.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    env = {**os.environ, "DOCBATCH_API_URL": api_url, "DOCBATCH_API_KEY": new_api_key("readme")}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    assert "completed=3" in out.stdout and '"custom_id":"r' in out.stdout, out.stdout


def _post_batch(api_url: str, key: str, raw: bytes) -> httpx.Response:
    return httpx.post(
        f"{api_url}/v1/batches",
        content=raw,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=60,
    )


def test_a_bad_create_body_is_a_422_naming_the_field(api_url, database):
    """``POST /v1/batches`` is checked by ``BatchCreate``: a field of the wrong shape is a
    422 in OpenAI's envelope naming it, and nothing is written."""
    tenant = f"t{secrets.token_hex(3)}"
    key = new_api_key(tenant)
    client = openai.OpenAI(base_url=f"{api_url}/v1", api_key=key, max_retries=0)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}
    f = client.files.create(file=("r.jsonl", _jsonl([line])), purpose="batch")
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        client.batches.create(
            input_file_id=f.id,
            endpoint="/v1/embeddings",
            completion_window=["24h"],  # type: ignore[arg-type]
        )
    assert bad.value.param == "completion_window"
    good = {"input_file_id": f.id, "endpoint": "/v1/embeddings", "completion_window": "24h"}
    cases = [
        ({**good, "completion_window": "48h"}, "completion_window"),
        ({**good, "input_file_id": 7}, "input_file_id"),
        ({**good, "metadata": {"k": "v" * 513}}, "metadata.k"),
        ({**good, "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({**good, "metadata": "nightly"}, "metadata"),
        ({**good, "surprise": 1}, "surprise"),
        ({k: v for k, v in good.items() if k != "endpoint"}, "endpoint"),
    ]
    for body, field in cases:
        got = _post_batch(api_url, key, json.dumps(body).encode())
        assert got.status_code == 422, (body, got.text)
        assert got.json()["error"]["param"] == field, got.text
    # A lone surrogate in metadata (a key or a value) and JSON nested 100,000 deep.
    lone = json.dumps({**good, "metadata": {"k": "\ud800"}}).encode()
    lone_key = json.dumps({**good, "metadata": {"\udc00": "v"}}).encode()
    deep = b'{"metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for raw in (lone, lone_key, deep):
        got = _post_batch(api_url, key, raw)
        assert got.status_code == 422, got.text
        assert got.json()["error"]["type"] == "invalid_request_error"
    assert [b.id for b in client.batches.list()] == []
    assert client.batches.list().data == []
    # The same body, well formed, is a batch.
    assert client.batches.create(**good).status in ("in_progress", "completed")


# -- issue 20: batches that end, once, whoever reads them ------------------------------


def _db_scalar(sql: str, **params: Any) -> Any:
    from sqlalchemy import text

    from docbatch.schema.db import new_session

    with new_session(get_settings()) as s:
        return s.execute(text(sql), params).scalar()


def _file_ids(batch_id: str) -> tuple[str, str]:
    """The batch's output and error file ids, read in the database (the Batch object shows
    them only once they hold something)."""
    from sqlalchemy import text

    from docbatch.schema.db import new_session

    with new_session(get_settings()) as s:
        row = s.execute(
            text("SELECT output_file_id, error_file_id FROM batches WHERE id = :b"),
            {"b": batch_id},
        ).one()
    return row[0], row[1]


def _objects_and_references() -> tuple[set[int], set[int]]:
    """Every large object, and those that rows name (files and document files)."""
    from sqlalchemy import text

    from docbatch.schema.db import new_session

    with new_session(get_settings()) as s:
        objects = set(s.scalars(text("SELECT oid::bigint FROM pg_largeobject_metadata")))
        named = set(
            s.scalars(
                text(
                    "SELECT blob_oid FROM files WHERE blob_oid IS NOT NULL UNION "
                    "SELECT blob_oid FROM document_files WHERE blob_oid IS NOT NULL"
                )
            )
        )
    return objects, named


def _summarize_lines(n: int, prefix: str = "doc") -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}-{i}",
            "method": "POST",
            "url": "/v1/docbatch/summarize",
            "body": {"text": f"Document number {i}. It has two sentences.", "max_sentences": 1},
        }
        for i in range(n)
    ]


@pytest.fixture
def idle_api(database: str) -> Iterator[str]:
    """An api whose queues no worker reads: its batches wait until cancelled or expired."""
    proc = ApiProcess({"DOCBATCH_QUEUE_PREFIX": f"t{secrets.token_hex(4)}"}).wait_ready()
    yield proc.url
    proc.stop()


def test_the_beat_finalizes_a_batch_only_ever_listed(api_url, workers):
    """Item 5: nobody GETs the batch; the beat's tick finalizes it and the list shows it
    completed, with its files written."""
    client = _client(api_url, tenant=f"t{secrets.token_hex(3)}")
    requests = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "all-MiniLM-L6-v2", "input": t},
        }
        for i, t in enumerate(["Open a socket.", "Close the file.", "Read a line."])
    ]
    f = client.files.create(file=("r.jsonl", _jsonl(requests)), purpose="batch")
    created = client.batches.create(
        input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    deadline = time.monotonic() + 240
    while (listed := client.batches.list().data[0]).status != "completed":
        assert listed.id == created.id
        assert time.monotonic() < deadline, listed
        time.sleep(0.5)
    assert listed.request_counts.completed == 3 and listed.completed_at
    output_id, error_id = _file_ids(created.id)
    assert (
        _db_scalar(
            "SELECT count(*) FROM files WHERE id IN (:o, :e) AND blob_oid IS NOT NULL",
            o=output_id,
            e=error_id,
        )
        == 2
    )
    assert len(_lines(client.files.content(listed.output_file_id).read())) == 3


def test_the_beat_expires_a_batch_nobody_reads(idle_api, api_url, workers):
    """Item 5: a batch past its window is expired by the beat (its job cancelled, its
    requests in the error file as ``batch_expired``) without any read of it."""
    client = _client(idle_api, tenant=f"t{secrets.token_hex(3)}")
    f = client.files.create(file=("r.jsonl", _jsonl(_summarize_lines(4))), purpose="batch")
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/docbatch/summarize", completion_window="24h"
    )
    job_id = (batch.model_extra or {})["docbatch_job_id"]
    from sqlalchemy import text

    from docbatch.schema.db import transaction

    with transaction(get_settings()) as s:
        s.execute(
            text("UPDATE batches SET expires_at = now() - interval '1 second' WHERE id = :b"),
            {"b": batch.id},
        )
    deadline = time.monotonic() + 120
    while _db_scalar("SELECT finalized_at FROM batches WHERE id = :b", b=batch.id) is None:
        assert time.monotonic() < deadline, "the beat never expired the batch"
        time.sleep(0.5)
    assert _db_scalar("SELECT status FROM jobs WHERE id = :j", j=job_id) == "cancelled"
    done = client.batches.retrieve(batch.id)
    assert done.status == "expired" and done.expired_at
    assert (done.request_counts.total, done.request_counts.failed) == (4, 4)
    errors = _lines(client.files.content(done.error_file_id).read())
    assert {e["error"]["code"] for e in errors} == {"batch_expired"} and len(errors) == 4


def test_concurrent_ticks_and_reads_finalize_once(idle_api):
    """Item 10: reads write nothing, and eight ticks at once finalize the batch once: the
    large objects made are exactly the two files' blobs, no orphan."""
    import threading

    from docbatch.schema.settings import get_settings
    from docbatch.worker.batches import tick

    client = _client(idle_api, tenant=f"t{secrets.token_hex(3)}")
    f = client.files.create(file=("r.jsonl", _jsonl(_summarize_lines(200))), purpose="batch")
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/docbatch/summarize", completion_window="24h"
    )
    objects_before, named_before = _objects_and_references()
    client.batches.cancel(batch.id)
    deadline = time.monotonic() + 60
    while (
        _db_scalar(
            "SELECT j.status FROM jobs j JOIN batches b ON b.job_id = j.id WHERE b.id = :b",
            b=batch.id,
        )
        != "cancelled"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # Eight reads of the ended batch at once: each sees it, none writes a file.
    with httpx.Client(timeout=60) as http:
        auth = {"Authorization": f"Bearer {client.api_key}"}
        reads: list[int] = []
        threads = [
            threading.Thread(
                target=lambda: reads.append(
                    http.get(f"{idle_api}/v1/batches/{batch.id}", headers=auth).status_code
                )
            )
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert reads == [200] * 8
    start = threading.Barrier(8)
    moved: list[int] = []

    def one_tick() -> None:
        start.wait()
        moved.append(tick(get_settings()))

    threads = [threading.Thread(target=one_tick) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # (the module's beat may be the one that got the batch's lock: wait for its commit)
    deadline = time.monotonic() + 60
    while _db_scalar("SELECT finalized_at FROM batches WHERE id = :b", b=batch.id) is None:
        assert time.monotonic() < deadline, "nobody finalized the batch"
        time.sleep(0.2)
    objects_after, named_after = _objects_and_references()
    made, named = objects_after - objects_before, named_after - named_before
    ours = {
        _db_scalar("SELECT blob_oid FROM files WHERE id = :f", f=file_id)
        for file_id in _file_ids(batch.id)
    }
    assert None not in ours and ours <= named
    assert made == named, f"orphan large objects: {sorted(made - named)}"
    assert objects_after - named_after <= objects_before - named_before  # no new orphan
    done = client.batches.retrieve(batch.id)
    assert done.status == "cancelled"
    assert len(_lines(client.files.content(done.error_file_id).read())) == 200


def test_deleting_a_running_batchs_files_never_breaks_it(idle_api):
    """Item 11, and issue 21: a running batch's input, output and error files are refused
    (409 naming the batch); once it ended they can go, and reads still answer."""
    client = _client(idle_api, tenant=f"t{secrets.token_hex(3)}")
    f = client.files.create(file=("r.jsonl", _jsonl(_summarize_lines(5))), purpose="batch")
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/docbatch/summarize", completion_window="24h"
    )
    output_id, error_id = _file_ids(batch.id)
    for file_id in (f.id, output_id, error_id):
        with pytest.raises(openai.ConflictError, match=batch.id):
            client.files.delete(file_id)
    assert client.batches.retrieve(batch.id).status == "in_progress"
    assert [b.id for b in client.batches.list()] == [batch.id]
    assert client.batches.cancel(batch.id).status in ("cancelling", "finalizing", "cancelled")
    done = _tick_until(client, batch.id)
    assert done.status == "cancelled"
    assert (done.request_counts.total, done.request_counts.failed) == (5, 5)
    assert client.batches.list().data[0].status == "cancelled"
    assert client.files.delete(error_id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.content(error_id)


def test_lines_expanding_past_the_document_limit_fail_the_batch(database):
    """Item 12: three lines of two inputs are six documents, past a limit of four: the batch
    fails saying so (never ``completed`` with empty files), and no job is left behind."""
    proc = ApiProcess(
        {
            "DOCBATCH_QUEUE_PREFIX": f"t{secrets.token_hex(4)}",
            "DOCBATCH_MAX_DOCUMENTS_PER_JOB": "4",
        }
    ).wait_ready()
    try:
        client = _client(proc.url, tenant=f"t{secrets.token_hex(3)}")
        requests = [
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {
                    "model": "all-MiniLM-L6-v2",
                    "input": [f"First input {i}.", f"Second input {i}."],
                },
            }
            for i in range(3)
        ]
        f = client.files.create(file=("r.jsonl", _jsonl(requests)), purpose="batch")
        batch = client.batches.create(
            input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        assert batch.status == "failed" and batch.failed_at
        [err] = batch.errors.data
        assert err.code == "too_many_requests" and err.line == 3
        assert "DOCBATCH_MAX_DOCUMENTS_PER_JOB" in err.message
        assert (batch.model_extra or {}).get("docbatch_job_id") is None
        assert _db_scalar("SELECT count(*) FROM jobs WHERE name = :n", n=f"batch {batch.id}") == 0
        # Two such lines are four documents: the batch runs.
        f2 = client.files.create(file=("r.jsonl", _jsonl(requests[:2])), purpose="batch")
        ok = client.batches.create(
            input_file_id=f2.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        assert ok.status == "in_progress" and ok.request_counts.total == 2
        client.batches.cancel(ok.id)
    finally:
        proc.stop()


def test_a_bad_file_line_is_refused_and_nothing_is_written(api_url, database):
    """Item 14: a lone surrogate in a custom_id (escaped or as raw bytes) or anywhere in the
    body, and a line nested 100,000 deep, are a 400 naming the line; no file, no blob."""
    client = _client(api_url, tenant=f"t{secrets.token_hex(3)}")
    good = json.dumps(
        {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}
    ).encode()
    bad_lines = [
        b'{"custom_id": "b\\ud800", "method": "POST", "url": "/v1/embeddings", '
        b'"body": {"input": "x"}}',
        b'{"custom_id": "b\xed\xa0\x80", "method": "POST", "url": "/v1/embeddings", '
        b'"body": {"input": "x"}}',
        b'{"custom_id": "b", "method": "POST", "url": "/v1/embeddings", '
        b'"body": {"input": "x", "user": "\\udfff"}}',
        b'{"custom_id": "b", "method": "POST", "url": "/v1/embeddings", "body": {"input": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}}",
    ]
    objects_before, _ = _objects_and_references()
    for bad in bad_lines:
        with pytest.raises(openai.BadRequestError) as refused:
            client.files.create(
                file=("r.jsonl", io.BytesIO(good + b"\n" + bad + b"\n")), purpose="batch"
            )
        assert "line 2" in refused.value.message, refused.value.message
    assert client.files.list().data == []
    # (the beat may finalize other tests' batches meanwhile: their objects have rows)
    objects_after, named_after = _objects_and_references()
    assert objects_after - objects_before <= named_after


def test_a_url_mismatch_batch_creates_no_job(api_url, database):
    """Item 13: the batch fails and nothing of its job exists: no job, no document, no unit
    for the workers to compute."""
    client = _client(api_url, tenant=f"t{secrets.token_hex(3)}")
    requests = [
        {"custom_id": f"a{i}", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}
        for i in range(5)
    ] + [{"custom_id": "b", "method": "POST", "url": "/v1/docbatch/tags", "body": {"text": "y"}}]
    f = client.files.create(file=("r.jsonl", _jsonl(requests)), purpose="batch")
    jobs_before = _db_scalar("SELECT count(*) FROM jobs")
    units_before = _db_scalar("SELECT count(*) FROM units")
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    assert batch.status == "failed" and batch.errors.data[0].code == "url_mismatch"
    assert (batch.model_extra or {}).get("docbatch_job_id") is None
    assert _db_scalar("SELECT count(*) FROM jobs WHERE name = :n", n=f"batch {batch.id}") == 0
    assert _db_scalar("SELECT count(*) FROM jobs") == jobs_before
    assert _db_scalar("SELECT count(*) FROM units") == units_before


def test_multi_input_request_counts_are_one_grouped_statement(api_url, workers):
    """Item 17: the counts of a batch whose lines hold several inputs come from one grouped
    statement (a couple of rows back), not from every document of the job."""
    from sqlalchemy import event

    from docbatch.domain.openai.batches import owned_batch, request_counts
    from docbatch.schema.db import new_session

    tenant = f"t{secrets.token_hex(3)}"
    client = _client(api_url, tenant=tenant)
    requests = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {
                "model": "all-MiniLM-L6-v2",
                "input": [f"Input {i} one.", f"Input {i} two.", f"Input {i} three."],
            },
        }
        for i in range(20)
    ]
    requests.append(
        {"custom_id": "bad", "method": "POST", "url": "/v1/embeddings", "body": {"input": 7}}
    )
    f = client.files.create(file=("r.jsonl", _jsonl(requests)), purpose="batch")
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    done = _wait(client, batch.id)
    assert done.status == "completed"
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (21, 20, 1)
    rows: list[int] = []
    with new_session(get_settings()) as s:
        b = owned_batch(s, tenant, batch.id)
        engine = s.get_bind()

        def fetched(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
            rows.append(cursor.rowcount)

        event.listen(engine, "after_cursor_execute", fetched)
        try:
            got = request_counts(s, b)
        finally:
            event.remove(engine, "after_cursor_execute", fetched)
    assert (got.total, got.completed, got.failed, got.pending) == (21, 20, 1, 0)
    assert len(rows) == 1 and rows[0] <= 1, rows  # one statement, one row, not 60 documents


# -- issue 26: a script written for OpenAI ---------------------------------------------


def test_the_api_warns_when_no_openai_model_name_is_mapped(database):
    """Item 13: at start-up, an api that maps none of OpenAI's common model names says so
    (naming DOCBATCH_OPENAI_MODELS and the 384-vs-1536 difference); one that maps one is
    quiet."""
    from tests.procs import log_tail

    prefix = f"t{secrets.token_hex(4)}"
    bare = ApiProcess({"DOCBATCH_QUEUE_PREFIX": prefix}, migrate=False).wait_ready()
    mapped = ApiProcess(
        {
            "DOCBATCH_QUEUE_PREFIX": prefix,
            "DOCBATCH_OPENAI_MODELS": '{"text-embedding-3-small": "embed"}',
        },
        migrate=False,
    ).wait_ready()
    try:
        warned = log_tail(bare.log_name, 20_000)
        assert "no DOCBATCH_OPENAI_MODELS alias maps OpenAI's model names" in warned
        assert "text-embedding-3-small" in warned and "384" in warned and "1536" in warned
        assert "DOCBATCH_OPENAI_MODELS alias" not in log_tail(mapped.log_name, 20_000)
    finally:
        bare.stop()
        mapped.stop()


def test_the_zero_edit_script_runs_with_openai_model_names(workers, beat, tmp_path):
    """Items 13-14: the docs' script, built as ``OpenAI()`` from OPENAI_BASE_URL and
    OPENAI_API_KEY, naming ``text-embedding-3-small`` (mapped to embed), polls on
    ``output_file_id`` and prints usage: it runs unchanged and gets 384-dimension vectors."""
    import os
    import re
    import subprocess
    import sys

    from tests.fixtures import ROOT

    api = ApiProcess(
        {"DOCBATCH_OPENAI_MODELS": '{"text-embedding-3-small": "embed"}'}, migrate=False
    ).wait_ready()
    try:
        page = (ROOT / "docs" / "how-to" / "openai-batch.md").read_text()
        section = page[page.index("## The zero-edit path") :]
        script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
        lines = [
            {
                "custom_id": f"z{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "text-embedding-3-small", "input": f"Close socket {i}."},
            }
            for i in range(3)
        ]
        (tmp_path / "requests.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
            "OPENAI_BASE_URL": f"{api.url}/v1",
            "OPENAI_API_KEY": new_api_key(f"z{secrets.token_hex(3)}"),
        }
        out = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert out.returncode == 0, out.stderr
        first, rest = out.stdout.split("\n", 1)
        assert first.startswith("completed") and "completed=3" in first, out.stdout
        assert int(first.rsplit(" ", 1)[1]) > 0  # usage.total_tokens
        assert '"custom_id":"z' in rest  # the output file's first 200 characters
        client = openai.OpenAI(base_url=f"{api.url}/v1", api_key=env["OPENAI_API_KEY"])
        [batch] = client.batches.list().data
        vectors = _lines(client.files.content(batch.output_file_id).read())
        assert {v["response"]["body"]["model"] for v in vectors} == {"text-embedding-3-small"}
        assert {len(v["response"]["body"]["data"][0]["embedding"]) for v in vectors} == {384}
    finally:
        api.stop()
