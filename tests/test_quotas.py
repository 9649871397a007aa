"""Tenant quotas (docbatch.domain.quotas), through the real api, CLI and Postgres: a
submission over a limit is a 429 naming the limit, its value and what is in use, with
Retry-After, and writes nothing; an OpenAI batch over it fails as OpenAI's does; the
concurrency quota passes a tenant over only while another waits."""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from docbatch.cli import main as cli
from docbatch.domain import fairshare, jobs
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import new_session, transaction
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Document, Job, Unit, utcnow
from tests.fixtures import new_api_key


@pytest.fixture
def tenant(app_instance: Any, private_queues: str) -> Iterator[tuple[str, TestClient]]:
    name = f"quota{secrets.token_hex(3)}"
    key = new_api_key(name)
    with TestClient(app_instance, headers={"Authorization": f"Bearer {key}"}) as client:
        yield name, client


def _docs(n: int, prefix: str = "d") -> list[dict[str, str]]:
    return [
        {"custom_id": f"{prefix}{i}", "text": f"quota test document number {i}"} for i in range(n)
    ]


def _written(tenant: str) -> tuple[int, int]:
    with new_session(get_settings()) as s:
        jobs_n = s.scalar(select(func.count()).select_from(Job).where(Job.tenant == tenant))
        docs = s.scalar(
            select(func.count())
            .select_from(Document)
            .join(Job, Job.id == Document.job_id)
            .where(Job.tenant == tenant)
        )
    return int(jobs_n or 0), int(docs or 0)


def test_over_the_queued_documents_limit_is_a_429_that_writes_nothing(tenant, capsys) -> None:
    name, client = tenant
    assert cli(["tenants", "set-limits", name, "--max-queued-documents", "8"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["limits"]["max_queued_documents"] == 8
    first = client.post("/v1/jobs", json={"tasks": ["summarize"], "documents": _docs(5)})
    assert first.status_code == 202, first.text
    before = _written(name)
    over = client.post("/v1/jobs", json={"tasks": ["summarize"], "documents": _docs(5, "e")})
    assert over.status_code == 429, over.text
    error = over.json()["error"]
    assert error["limit"] == "max_queued_documents"
    assert (error["value"], error["in_use"], error["requested"]) == (8, 5, 5)
    assert "max_queued_documents" in over.json()["detail"]
    assert int(over.headers["Retry-After"]) > 0
    assert _written(name) == before  # no job, no document
    # Back to the default (none): the same submission goes through.
    assert cli(["tenants", "set-limits", name, "--max-queued-documents", "default"]) == 0
    again = client.post("/v1/jobs", json={"tasks": ["summarize"], "documents": _docs(5, "e")})
    assert again.status_code == 202, again.text


def test_documents_per_day_count_finished_jobs_too(tenant) -> None:
    name, client = tenant
    assert cli(["tenants", "set-limits", name, "--max-documents-per-day", "6"]) == 0
    ok = client.post("/v1/jobs", json={"tasks": ["summarize"], "documents": _docs(4)})
    assert ok.status_code == 202, ok.text
    client.post(f"/v1/jobs/{ok.json()['id']}/cancel")  # finished work still counts today
    over = client.post("/v1/jobs", json={"tasks": ["summarize"], "documents": _docs(3, "e")})
    assert over.status_code == 429, over.text
    error = over.json()["error"]
    assert (error["limit"], error["value"], error["in_use"]) == ("max_documents_per_day", 6, 4)
    assert 0 < int(over.headers["Retry-After"]) <= 86_401  # the next UTC midnight


def test_an_openai_batch_over_the_token_limit_fails_as_openai_does(tenant) -> None:
    name, client = tenant
    assert cli(["tenants", "set-limits", name, "--max-queued-tokens", "20"]) == 0
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "all-MiniLM-L6-v2", "input": "a sentence of some length " * 4},
        }
        for i in range(5)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = client.post(
        "/v1/files", files={"file": ("r.jsonl", io.BytesIO(data))}, data={"purpose": "batch"}
    )
    assert uploaded.status_code == 200, uploaded.text
    batch = client.post(
        "/v1/batches",
        json={
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/embeddings",
            "completion_window": "24h",
        },
    )
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert body["status"] == "failed", body
    (error,) = body["errors"]["data"]
    assert error["code"] == "token_limit_exceeded"
    assert "max_queued_tokens" in error["message"]
    assert _written(name) == (0, 0)  # no job behind it


def test_the_concurrency_quota_yields_only_while_others_wait(database: str) -> None:
    settings = get_settings().model_copy(
        update={"queue_prefix": f"cq{secrets.token_hex(3)}", "unit_max_documents": 2}
    )
    capped, other = f"capped{secrets.token_hex(2)}", f"other{secrets.token_hex(2)}"
    assert cli(["tenants", "set-limits", capped, "--max-concurrent-units", "1"]) == 0
    for tenant in (capped, other):
        with unit_of_work(settings, publish=False) as s:
            jobs.create_job(
                s,
                settings,
                tenant=tenant,
                tasks=[{"type": "summarize"}],
                documents=((d, None) for d in _docs(8)),
            )
    queue = settings.queue_for("summarize")

    def pick(n: int) -> list[str]:
        with transaction(settings) as s:
            fairshare.lock_queue(s, queue)
            ids = fairshare.pick(s, queue, n, settings, utcnow())
            owners = dict(
                s.execute(
                    select(Unit.id, Job.tenant)
                    .join(Job, Job.id == Unit.job_id)
                    .where(Unit.id.in_(ids))
                ).all()
            )
        return [owners[i] for i in ids]

    first = pick(5)  # the capped tenant gets one unit in flight, the other the rest
    assert first.count(capped) == 1 and first.count(other) == 4, first
    # The other tenant has nothing left: alone, the capped one uses every worker.
    assert pick(3) == [capped, capped, capped]
