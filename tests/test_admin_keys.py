"""Tenant keys managed with the admin key over the api (no database shell), audited; and
`docbatch keys` doing the same through a real api process."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from fastapi.testclient import TestClient
from sqlalchemy import select

from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import AdminAudit
from tests.fixtures import ROOT
from tests.procs import ApiProcess

ADMIN = "adm-" + secrets.token_urlsafe(32)


def test_admin_creates_lists_and_revokes_tenant_keys(
    app_instance, api, anon_api, settings_override
):
    # Off unless configured: the routes do not exist.
    assert api.post("/v1/admin/keys", json={"tenant": "x"}).status_code == 404
    settings_override.set(admin_key=ADMIN)
    admin = TestClient(app_instance, headers={"Authorization": f"Bearer {ADMIN}"})
    tenant = f"team-{secrets.token_hex(3)}"

    assert anon_api.get("/v1/admin/keys").status_code == 401
    assert api.get("/v1/admin/keys").status_code == 403  # a tenant key is not the admin's
    assert api.post("/v1/admin/keys", json={"tenant": tenant}).status_code == 403

    created = admin.post("/v1/admin/keys", json={"tenant": tenant})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["tenant"] == tenant and body["key"].startswith(f"dbk_{body['id']}_")
    assert created.headers["X-Request-ID"]
    assert admin.post("/v1/admin/keys", json={"tenant": "no spaces"}).status_code == 422

    as_tenant = TestClient(app_instance, headers={"Authorization": f"Bearer {body['key']}"})
    assert as_tenant.get("/v1/jobs").status_code == 200  # the new key works

    listed = admin.get("/v1/admin/keys", params={"tenant": tenant}).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == body["id"]
    assert listed["data"][0]["key"] is None  # never shown again

    revoked = admin.delete(f"/v1/admin/keys/{body['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert as_tenant.get("/v1/jobs").status_code == 401  # at once on this replica
    assert admin.delete("/v1/admin/keys/0000000000000000").status_code == 404

    with new_session(get_settings()) as s:
        rows = s.scalars(select(AdminAudit).where(AdminAudit.tenant == tenant)).all()
    assert [(r.action, r.key_id) for r in rows] == [
        ("key.create", body["id"]),
        ("key.revoke", body["id"]),
    ]
    assert all(r.request_id and r.client for r in rows)


def test_docbatch_keys_uses_the_admin_key(database):
    api = ApiProcess({"DOCBATCH_ADMIN_KEY": ADMIN}, migrate=False).wait_ready()
    env = {
        **os.environ,
        "DOCBATCH_API_URL": api.url,
        "DOCBATCH_ADMIN_KEY": ADMIN,
        # No database for the CLI: everything goes through the api.
        "DOCBATCH_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
    }
    tenant = f"cli-{secrets.token_hex(3)}"

    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "docbatch.cli", "keys", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    try:
        made = keys("create", "--tenant", tenant)
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        assert key.startswith("dbk_")
        listed = keys("list", "--tenant", tenant)
        assert listed.returncode == 0 and key.split("_")[1] in listed.stdout, listed
        assert "active" in listed.stdout
        gone = keys("revoke", key)
        assert gone.returncode == 0, gone.stderr
        assert "revoked" in keys("list", "--tenant", tenant).stdout
    finally:
        api.stop()
