"""A broker with a password (Redis AUTH): the api publishes, the worker consumes, /metrics
reads queue depths and /readyz checks it, all through DOCBATCH_BROKER_URL's credentials;
the same URL without them is refused."""

from __future__ import annotations

import secrets
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fakeworkers import fake_worker_env
from tests.fixtures import WorkerProcess
from tests.procs import ApiProcess, RedisServer, wait_http


def test_a_password_protected_broker_works_end_to_end(api_key, private_queues):
    redis = RedisServer(password=secrets.token_urlsafe(16))
    redis.start()
    env = {"DOCBATCH_BROKER_URL": redis.url, "DOCBATCH_QUEUE_PREFIX": private_queues}
    api = ApiProcess(env, migrate=False).wait_ready()
    worker = WorkerProcess("summarize", env={**fake_worker_env(private_queues), **env})
    no_password = ApiProcess(
        {**env, "DOCBATCH_BROKER_URL": f"redis://127.0.0.1:{redis.port}/0"}, migrate=False
    )
    try:
        worker.wait_ready()
        auth = {"Authorization": f"Bearer {api_key}"}
        docs = [{"custom_id": f"d{i}", "text": f"text {i}"} for i in range(4)]
        job = httpx.post(
            f"{api.url}/v1/jobs", json={"tasks": ["summarize"], "documents": docs}, headers=auth
        ).json()
        for _ in range(600):
            done = httpx.get(f"{api.url}/v1/jobs/{job['id']}", headers=auth)
            if done.json()["status"] == "completed":
                break
            time.sleep(0.2)
        assert done.json()["status"] == "completed", done.json()
        metrics = httpx.get(f"{api.url}/metrics").text
        depths = {
            s.labels["queue"]: s.value
            for f in text_string_to_metric_families(metrics)
            for s in f.samples
            if s.name == "docbatch_queue_depth"
        }
        assert depths[f"{private_queues}.summarize"] == 0  # read from Redis, with AUTH
        # Without the password the broker refuses: the api says it is not ready.
        wait_http(f"{no_password.url}/readyz", no_password.proc, no_password.log_name, status=503)
    finally:
        worker.stop()
        api.stop()
        no_password.stop()
        redis.stop()
