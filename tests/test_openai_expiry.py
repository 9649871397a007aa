"""OpenAI files and batches over their lifetime (issue 21): ``expires_after`` on
files.create and ``output_expires_after`` on batches.create set ``expires_at`` and the
lifecycle pass deletes the files when it passes; deleting a file a running batch uses is
a 409 naming the batch; a batch whose job is deleted reads ``expired``. The real
``openai`` client against a real api process; no worker serves its queues, so the batch
runs until it is cancelled. Every test ends with every large object owned by a row."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import openai
import pytest
from sqlalchemy import update

from docbatch.schema.db import transaction
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import StoredFile, utcnow
from docbatch.worker.lifecycle import lifecycle_pass
from tests.fixtures import new_api_key
from tests.procs import ApiProcess
from tests.storage import large_objects

pytestmark = pytest.mark.usefixtures("blobs_owned")
HOUR = 3600


@pytest.fixture
def client(private_queues: str) -> Iterator[openai.OpenAI]:
    proc = ApiProcess({"DOCBATCH_QUEUE_PREFIX": private_queues}).wait_ready()
    try:
        yield openai.OpenAI(
            base_url=f"{proc.url}/v1", api_key=new_api_key("default"), max_retries=0
        )
    finally:
        proc.stop()


def _requests(n: int) -> io.BytesIO:
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "all-MiniLM-L6-v2", "input": f"text {i}"},
        }
        for i in range(n)
    ]
    return io.BytesIO("".join(json.dumps(x) + "\n" for x in lines).encode())


def test_file_and_output_expiry_and_a_file_in_use(client: openai.OpenAI):
    lifecycle_pass(get_settings(), inline=True)  # earlier tests' deletes, finished first
    before = large_objects()
    f = client.files.create(
        file=("in.jsonl", _requests(3)),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": HOUR},
    )
    assert f.expires_at == f.created_at + HOUR
    with pytest.raises(openai.BadRequestError, match="expires_after"):
        client.files.create(
            file=("in.jsonl", _requests(1)),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 60},
        )
    batch = client.batches.create(
        input_file_id=f.id,
        endpoint="/v1/embeddings",
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 2 * HOUR},
    )
    with pytest.raises(openai.ConflictError, match=batch.id):
        client.files.delete(f.id)
    assert client.files.retrieve(f.id).id == f.id, "refused: still there"

    from docbatch.worker.batches import tick

    client.batches.cancel(batch.id)
    tick(get_settings())
    done = client.batches.retrieve(batch.id)
    assert done.status == "cancelled", done
    out = client.files.retrieve(done.output_file_id)
    assert out.expires_at == out.created_at + 2 * HOUR

    # Time passes: the lifecycle pass deletes the input file (its batch has ended).
    with transaction(get_settings()) as s:
        s.execute(update(StoredFile).where(StoredFile.id == f.id).values(expires_at=utcnow()))
    report = lifecycle_pass(get_settings(), inline=True)
    assert f.id in report.expired_files and done.output_file_id not in report.expired_files
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)

    # The batch's job deleted: the batch reads expired, as OpenAI's deleted batches do.
    from docbatch.schema.db import new_session
    from docbatch.schema.tables import Batch

    with new_session(get_settings()) as s:
        job_id = s.get(Batch, batch.id).job_id
    import httpx

    resp = httpx.delete(
        f"{client.base_url}jobs/{job_id}", headers={"Authorization": f"Bearer {client.api_key}"}
    )
    assert resp.status_code == 202, resp.text
    lifecycle_pass(get_settings(), inline=True)
    assert client.batches.retrieve(batch.id).status == "expired"
    for file_id in (done.output_file_id, done.error_file_id):
        client.files.delete(file_id)
    assert large_objects() == before
