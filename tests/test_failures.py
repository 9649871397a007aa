"""Failure semantics with real worker processes and the fake handler (tests/fakes.py):
poison documents, workers killed by their unit, cancellation mid-job, webhooks."""

from __future__ import annotations

import http.server
import json
import secrets
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from docbatch.domain.webhooks import SIGNATURE_HEADER, verify
from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import Document, Result, Tenant, Unit
from tests.fakeworkers import fake_worker_env
from tests.fixtures import WorkerProcess, read_ndjson, wait_for_job
from tests.settings_env import override


@pytest.fixture(scope="module")
def fake(database: str) -> Iterator[WorkerProcess]:
    """One fake-handler worker for the module, on private queues (one batch per chunk, so
    cancellation has batch boundaries to stop at). Jobs created while it runs use them."""
    prefix = f"fail{secrets.token_hex(3)}"
    with override(queue_prefix=prefix):
        env = fake_worker_env(prefix, DOCBATCH_MODELS__SUMMARIZE__MAX_BATCH_ROWS="1")
        worker = WorkerProcess("summarize", env=env, name="failures")
        try:
            yield worker.wait_ready()
        finally:
            worker.stop()


def _docs(n: int, special: dict[int, str] | None = None) -> list[dict[str, str]]:
    special = special or {}
    return [
        {"custom_id": f"d{i:04d}", "text": special.get(i, f"document number {i} says hello")}
        for i in range(n)
    ]


def _accounted(job: dict) -> None:
    for task, c in job["counts"].items():
        assert c["succeeded"] + c["failed"] + c["cancelled"] == c["total"] == job["documents"], (
            task,
            c,
        )


def test_poison_document_fails_alone_and_the_job_goes_on(api, fake):
    docs = _docs(40, {7: "this one is POISON for the model", 23: "and POISON again"})
    job_id = api.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs}).json()["id"]
    job = wait_for_job(api, job_id, timeout=120)
    assert job["status"] == "completed_with_errors"
    _accounted(job)
    assert job["counts"]["summarize"]["failed"] == 2
    errors = read_ndjson(api.get(f"/v1/jobs/{job_id}/errors"))
    assert [e["custom_id"] for e in errors] == ["d0007", "d0023"]
    for e in errors:
        assert "ValueError: poison chunk" in e["results"]["summarize"]["error"]
    ok = [x for x in read_ndjson(api.get(f"/v1/jobs/{job_id}/results")) if x not in errors]
    assert len(ok) == 38
    assert all(x["results"]["summarize"]["status"] == "succeeded" for x in ok)
    assert ok[0]["results"]["summarize"]["output"]["summary"] == "DOCUMENT NUMBER 0 SAYS HELLO"


def test_document_that_kills_its_worker_fails_alone_and_its_neighbours_succeed(api, fake, limits):
    # the worker runs with the default DOCBATCH_MAX_UNIT_ATTEMPTS=3
    limits["UNIT_MAX_DOCUMENTS"] = "5"
    docs = _docs(20, {12: "KILLME please"})
    job_id = api.post("/v1/jobs", json={"tasks": ["summarize"], "documents": docs}).json()["id"]
    job = wait_for_job(api, job_id, timeout=240)
    log = fake.log
    assert job["status"] == "completed_with_errors"
    _accounted(job)
    # the killer's unit (documents 10..14) was split on retry until the killer was alone:
    # only it failed, with the reason; its neighbours in the same unit succeeded
    counts = job["counts"]["summarize"]
    assert (counts["succeeded"], counts["failed"], counts["total"]) == (19, 1, 20), counts
    errors = read_ndjson(api.get(f"/v1/jobs/{job_id}/errors"))
    assert [e["custom_id"] for e in errors] == ["d0012"]
    reason = errors[0]["results"]["summarize"]["error"]
    assert "killed the worker 3 times" in reason, reason
    assert "gave up after 3 attempts" in reason and "DOCBATCH_MAX_UNIT_ATTEMPTS=3" in reason
    assert log.count("WorkerLostError") >= 3 or log.count("SIGKILL") >= 3, log[-3000:]
    ok = [x for x in read_ndjson(api.get(f"/v1/jobs/{job_id}/results")) if x not in errors]
    assert [x["custom_id"] for x in ok] == [f"d{i:04d}" for i in range(20) if i != 12]
    assert ok[12]["results"]["summarize"]["output"]["summary"] == "DOCUMENT NUMBER 13 SAYS HELLO"
    with new_session(get_settings()) as s:
        units = s.scalars(
            select(Unit).where(Unit.job_id == job_id, Unit.seq_lo <= 14, Unit.seq_hi >= 10)
        ).all()
    # the split units cover 10..14 exactly once; the killer's own unit failed after 3
    assert sorted(i for u in units for i in range(u.seq_lo, u.seq_hi + 1)) == list(range(10, 15))
    assert [(u.state, u.attempts) for u in units if u.seq_lo == 12 == u.seq_hi] == [("failed", 3)]
    assert {u.state for u in units if u.seq_lo != 12 or u.seq_hi != 12} == {"done"}


def _unit_state(job_id: str, seq_lo: int) -> str | None:
    with new_session(get_settings()) as s:
        return s.scalar(select(Unit.state).where(Unit.job_id == job_id, Unit.seq_lo == seq_lo))


def test_cancel_mid_job(api, fake, limits):
    limits["UNIT_MAX_DOCUMENTS"] = "20"
    slow = {i: f"SLOW document number {i}" for i in range(100)}  # 0.2 s per batch
    job_id = api.post(
        "/v1/jobs", json={"tasks": ["summarize"], "documents": _docs(100, slow)}
    ).json()["id"]
    deadline = time.monotonic() + 120
    while _unit_state(job_id, 0) != "running":
        assert time.monotonic() < deadline, "the first unit never started"
        time.sleep(0.05)
    time.sleep(1.0)  # a few of its 20 batches (0.2 s each) in
    cancelled_at = time.monotonic()
    assert api.post(f"/v1/jobs/{job_id}/cancel").json()["status"] in ("cancelling", "cancelled")
    job = wait_for_job(api, job_id, timeout=60)
    stopped_after = time.monotonic() - cancelled_at
    assert job["status"] == "cancelled"
    _accounted(job)
    counts = job["counts"]["summarize"]
    assert counts["failed"] == 0 and counts["cancelled"] >= 80 and counts["succeeded"] >= 1
    with new_session(get_settings()) as s:
        units = s.scalars(select(Unit).where(Unit.job_id == job_id).order_by(Unit.seq_lo)).all()
        first_unit_statuses = s.scalars(
            select(Result.status)
            .join(Document, Document.id == Result.document_id)
            .where(Result.job_id == job_id, Document.seq.between(0, 19))
        ).all()
    assert [u.state for u in units] == ["cancelled"] * 5
    # the running unit stopped at a batch boundary: part done, part cancelled (20 batches of
    # 0.2 s would take 4 s; it stopped well before)
    assert "succeeded" in first_unit_statuses and "cancelled" in first_unit_statuses
    assert stopped_after < 4
    # queued units never started (the pipelined worker may have claimed and chunked one
    # unit ahead, whichever the fair order picked, but it never reached the model: none of
    # the documents after the first unit succeeded)
    assert sum(u.attempts for u in units[1:]) <= 1
    with new_session(get_settings()) as s:
        later_statuses = set(
            s.scalars(
                select(Result.status)
                .join(Document, Document.id == Result.document_id)
                .where(Result.job_id == job_id, Document.seq >= 20)
            )
        )
    assert later_statuses == {"cancelled"}
    lines = read_ndjson(api.get(f"/v1/jobs/{job_id}/results"))
    assert lines[-1]["results"]["summarize"] == {
        **lines[-1]["results"]["summarize"],
        "status": "cancelled",
    }


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    calls = 0

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls += 1
        if type(self).calls == 1:
            self.send_response(503)  # the first try fails: docbatch must retry
        else:
            type(self).received.append((dict(self.headers), body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[str]:
    _Hook.received, _Hook.calls = [], 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/docbatch"
    server.shutdown()
    server.server_close()


def test_webhook_signed_retried_and_delivered(api, fake, hook_server, limits):
    from tests.procs import WebhooksProcess

    limits["WEBHOOK_ALLOW_NETWORKS"] = '["127.0.0.1/32"]'  # the receiver is on localhost
    sender = WebhooksProcess().wait_ready()
    try:
        job_id = api.post(
            "/v1/jobs",
            json={"tasks": ["summarize"], "documents": _docs(5), "webhook_url": hook_server},
        ).json()["id"]
        assert wait_for_job(api, job_id, timeout=120)["status"] == "completed"
        deadline = time.monotonic() + 60
        while not _Hook.received:
            assert time.monotonic() < deadline, f"no webhook after {_Hook.calls} calls"
            time.sleep(0.1)
    finally:
        sender.stop()
    assert _Hook.calls == 2
    headers, body = _Hook.received[0]
    payload = json.loads(body)
    assert payload["event"] == "job.completed"
    assert payload["job"]["id"] == job_id and payload["job"]["status"] == "completed"
    assert payload["job"]["counts"]["summarize"]["succeeded"] == 5
    assert headers["Docbatch-Event"] == "job.completed"
    assert headers["Docbatch-Delivery"] == str(payload["delivery_id"])
    with new_session(get_settings()) as s:
        secret = s.scalar(select(Tenant.webhook_secret).where(Tenant.name == "default"))
    assert secret
    signature = headers[SIGNATURE_HEADER]
    timestamp = int(signature.split(",")[0].removeprefix("t="))
    assert abs(time.time() - timestamp) < 120
    assert verify(secret, signature, body)
    assert not verify(secret, signature, body + b" ")
    assert not verify("wrong-secret", signature, body)
