"""Redis and PostgreSQL with passwords and TLS, as a managed cloud offers them: the api
and a worker connect with ``rediss://`` and ``sslmode=verify-full`` and run a real job;
the same servers refuse a client without TLS, and a client that does not trust the
server's CA does not connect (the certificate is verified, not just encrypted)."""

from __future__ import annotations

import secrets
import time

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from docbatch.domain.broker import make_app
from docbatch.domain.tenants import create_key
from docbatch.schema.db import transaction
from docbatch.schema.settings import Settings
from tests.fakeworkers import fake_worker_env
from tests.fixtures import WorkerProcess
from tests.procs import ApiProcess
from tests.tls_servers import TlsPostgres, TlsRedis, make_certs


@pytest.fixture
def servers(tmp_path):
    certs = make_certs(tmp_path / "certs")
    redis = TlsRedis(certs, secrets.token_urlsafe(16)).start()
    pg = TlsPostgres(certs, secrets.token_urlsafe(16))
    try:
        pg.start()
        yield redis, pg
    finally:
        pg.stop()
        redis.stop()


def test_api_and_worker_run_a_job_over_tls_with_passwords(servers):
    redis, pg = servers
    prefix = f"tls{secrets.token_hex(3)}"
    env = {
        "DOCBATCH_DATABASE_URL": pg.url(),
        "DOCBATCH_BROKER_URL": redis.url(),
        "DOCBATCH_QUEUE_PREFIX": prefix,
    }
    api = ApiProcess(env, migrate=True).wait_ready()  # /readyz: Postgres and Redis answer
    worker = WorkerProcess("summarize", env={**fake_worker_env(prefix), **env})
    try:
        with transaction(Settings(database_url=pg.url())) as s:
            key = create_key(s, "tls-team").key
        worker.wait_ready()
        auth = {"Authorization": f"Bearer {key}"}
        docs = [{"custom_id": f"d{i}", "text": f"text {i}"} for i in range(5)]
        resp = httpx.post(
            f"{api.url}/v1/jobs", json={"tasks": ["summarize"], "documents": docs}, headers=auth
        )
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        for _ in range(600):
            job = httpx.get(f"{api.url}/v1/jobs/{job_id}", headers=auth).json()
            if job["status"] == "completed":
                break
            time.sleep(0.2)
        assert job["status"] == "completed", job
        results = httpx.get(f"{api.url}/v1/jobs/{job_id}/results", headers=auth).text
        assert "TEXT 3" in results  # the fake handler upper-cases
        depths = {
            s.labels["queue"]: s.value
            for f in text_string_to_metric_families(httpx.get(f"{api.url}/metrics").text)
            for s in f.samples
            if s.name == "docbatch_queue_depth"
        }
        assert depths[f"{prefix}.summarize"] == 0  # read from Redis over TLS
        # Every session the api and worker hold is encrypted (pg_stat_ssl, server side).
        with psycopg.connect(pg.url().replace("+psycopg", "")) as conn:
            plain = conn.execute(
                "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                "WHERE backend_type = 'client backend' AND NOT ssl"
            ).fetchone()
            encrypted = conn.execute(
                "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                "WHERE backend_type = 'client backend' AND ssl AND datname = 'docbatch'"
            ).fetchone()
        assert plain == (0,) and encrypted is not None and encrypted[0] >= 2
    finally:
        worker.stop()
        api.stop()


def test_no_tls_or_an_untrusted_certificate_is_refused(servers):
    redis, pg = servers
    plain = pg.url(sslmode="disable").replace("+psycopg", "")
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(plain).close()
    wrong_password = pg.url().replace(f":{pg.password}@", ":wrong@").replace("+psycopg", "")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong_password).close()
    # sslmode=require encrypts without checking the CA: it connects.
    psycopg.connect(pg.url(sslmode="require").replace("+psycopg", "")).close()

    # A bare rediss:// URL: docbatch verifies the certificate against the system's CAs,
    # which do not hold the test CA, so the broker connection is refused...
    bare = make_app(Settings(broker_url=redis.bare_url))
    with pytest.raises(Exception, match="certificate verify failed"):  # noqa: SIM117
        with bare.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
    # ... and with the CA named in the URL it connects.
    trusted = make_app(Settings(broker_url=redis.url()))
    with trusted.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=5)
    # Without the password Redis refuses.
    anonymous = make_app(Settings(broker_url=redis.url().replace(f":{redis.password}@", "")))
    with pytest.raises(Exception, match="(?i)auth"):  # noqa: SIM117
        with anonymous.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
