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

from tests.fixtures import load_corpus, new_api_key
from tests.procs import ApiProcess

TERMINAL = {"completed", "failed", "expired", "cancelled"}


@pytest.fixture(scope="module")
def api_url(database: str) -> Iterator[str]:
    proc = ApiProcess({}).wait_ready()
    yield proc.url
    proc.stop()


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
    # The output file can be read while the batch runs (it grows until the end).
    assert batch.output_file_id
    client.files.content(batch.output_file_id).read()

    done = _wait(client, batch.id)
    assert done.status == "completed", done
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (len(requests), len(docs), 1)
    assert done.completed_at and done.output_file_id and done.error_file_id

    output = _lines(client.files.content(done.output_file_id).read())
    assert sorted(o["custom_id"] for o in output) == sorted(d["custom_id"] for d in docs)
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
        done = _wait(client, created[0].id, timeout=60)
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
