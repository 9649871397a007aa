"""API keys, tenant isolation on every endpoint, and Idempotency-Key."""

from __future__ import annotations

import json
import subprocess
import sys

from sqlalchemy import select

from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import ApiKey, Tenant
from tests.fixtures import ROOT, new_api_key

DOCS = [{"custom_id": "a", "text": "One."}, {"custom_id": "b", "text": "Two."}]


def _submit(client, **extra):
    resp = client.post("/v1/jobs", json={"tasks": ["summarize"], "documents": DOCS, **extra})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def test_every_endpoint_needs_a_valid_key(anon_api, api, private_queues):
    job_id = _submit(api)
    endpoints = [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/results"),
        ("GET", f"/v1/jobs/{job_id}/errors"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
    ]
    for method, path in endpoints:
        resp = anon_api.request(method, path)
        assert resp.status_code == 401, (method, path)
        assert "missing API key" in resp.json()["detail"]
        assert resp.headers["www-authenticate"] == "Bearer"
        resp = anon_api.request(method, path, headers={"Authorization": "Bearer nope"})
        assert resp.status_code == 401 and "malformed API key" in resp.json()["detail"]
        forged = "dbk_0123456789abcdef_" + "x" * 43
        resp = anon_api.request(method, path, headers={"Authorization": f"Bearer {forged}"})
        assert resp.status_code == 401 and "unknown API key" in resp.json()["detail"]
    assert anon_api.get("/healthz").status_code == 200
    assert anon_api.get("/readyz").status_code in (200, 503)
    api.post(f"/v1/jobs/{job_id}/cancel")


def test_keys_cli_create_list_revoke(anon_api, limits):
    limits["API_KEY_CACHE_SECONDS"] = "0"  # see the revocation at once

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "docbatch.cli", "keys", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    key = cli("create", "--tenant", "cli-tenant").stdout.strip()
    assert key.startswith("dbk_")
    auth = {"Authorization": f"Bearer {key}"}
    assert anon_api.get("/v1/jobs", headers=auth).status_code == 200
    with new_session(get_settings()) as s:
        stored = s.scalars(select(ApiKey).where(ApiKey.tenant == "cli-tenant")).one()
    assert key not in (stored.key_hash, stored.key_id) and len(stored.key_hash) == 64
    listed = cli("list", "--tenant", "cli-tenant").stdout
    assert stored.key_id in listed and "active" in listed and key not in listed
    rows = json.loads(cli("list", "--tenant", "cli-tenant", "--format", "json").stdout)
    assert [(r["id"], r["state"], r["revoked_at"]) for r in rows] == [
        (stored.key_id, "active", None)
    ]

    secret = cli("webhook-secret", "--tenant", "cli-tenant").stdout.strip()
    with new_session(get_settings()) as s:
        assert secret == s.get(Tenant, "cli-tenant").webhook_secret  # type: ignore[union-attr]

    cli("revoke", stored.key_id)
    resp = anon_api.get("/v1/jobs", headers=auth)
    assert resp.status_code == 401
    assert f"API key {stored.key_id} was revoked" in resp.json()["detail"]
    assert "revoked" in cli("list", "--tenant", "cli-tenant").stdout


def test_another_tenants_job_is_404_everywhere(api, other_api, private_queues):
    job_id = _submit(api, name="mine")
    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/results"),
        ("GET", f"/v1/jobs/{job_id}/errors"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
    ]:
        resp = other_api.request(method, path)
        assert resp.status_code == 404, (method, path, resp.text)
        assert resp.json()["detail"] == f"job {job_id} not found"
    listed = other_api.get("/v1/jobs").json()
    assert job_id not in [j["id"] for j in listed["data"]]
    assert other_api.get("/v1/jobs", params={"before": job_id}).status_code == 200
    # the other tenant's cancel did nothing; the owner's works
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    assert api.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    mine = api.get("/v1/jobs").json()["data"]
    assert job_id in [j["id"] for j in mine]


def test_idempotency_key(api, other_api, private_queues):
    body = {"tasks": ["summarize"], "documents": DOCS}
    first = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-1"})
    again = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]

    changed = {**body, "name": "different"}
    conflict = api.post("/v1/jobs", json=changed, headers={"Idempotency-Key": "nightly-1"})
    assert conflict.status_code == 409
    assert "different request body" in conflict.json()["detail"]

    theirs = other_api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "nightly-1"})
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]

    # NDJSON: the job options in the query count as part of the request
    ndjson = b"".join(json.dumps(d).encode() + b"\n" for d in DOCS)
    headers = {"Idempotency-Key": "nd-1", "Content-Type": "application/x-ndjson"}
    nd = api.post("/v1/jobs", params={"tasks": "summarize"}, content=ndjson, headers=headers)
    nd_again = api.post("/v1/jobs", params={"tasks": "summarize"}, content=ndjson, headers=headers)
    assert (nd.status_code, nd_again.status_code) == (202, 200)
    assert nd.json()["id"] == nd_again.json()["id"]
    other_tasks = api.post("/v1/jobs", params={"tasks": "tags"}, content=ndjson, headers=headers)
    assert other_tasks.status_code == 409
    api.post(f"/v1/jobs/{nd.json()['id']}/cancel")

    without = api.post("/v1/jobs", json=body)
    assert without.status_code == 202 and without.json()["id"] != first.json()["id"]
    for client, job in ((api, first), (other_api, theirs), (api, without)):
        client.post(f"/v1/jobs/{job.json()['id']}/cancel")


def test_keys_of_one_tenant_see_the_same_jobs(api, private_queues):
    from fastapi.testclient import TestClient

    job_id = _submit(api)
    second_key = new_api_key("default")
    client = TestClient(api.app, headers={"Authorization": f"Bearer {second_key}"})
    assert client.get(f"/v1/jobs/{job_id}").status_code == 200
    api.post(f"/v1/jobs/{job_id}/cancel")
