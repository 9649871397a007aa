"""OpenTelemetry, optional: off by default (nothing of the SDK imported), and with
DOCBATCH_OTLP_ENDPOINT set the api and a real worker export submit → unit claim → batch →
write spans over OTLP/HTTP to a receiver, linked by the job's and units' ids.

Needs the ``otel`` extra (``pip install -e '.[otel]'``); skipped without it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from docbatch.processes import free_port
from tests.fakeworkers import fake_worker_env
from tests.fixtures import ROOT, WorkerProcess
from tests.procs import ApiProcess


def test_tracing_is_off_and_imports_nothing_by_default():
    # (redis-py imports opentelemetry.sdk.metrics itself when the SDK is installed.)
    code = (
        "import sys, docbatch.api.app, docbatch.worker.runner\n"
        "from docbatch.domain import tracing\n"
        "print(tracing.enabled() or any(m.startswith(('opentelemetry.sdk.trace', "
        "'opentelemetry.exporter')) for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]


def _receiver() -> tuple[ThreadingHTTPServer, list[dict[str, object]]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                service = {a.key: a.value.string_value for a in resource.resource.attributes}.get(
                    "service.name"
                )
                for scope in resource.scope_spans:
                    for s in scope.spans:
                        attrs = {}
                        for a in s.attributes:
                            v = a.value
                            attrs[a.key] = v.string_value or v.int_value or v.bool_value
                        spans.append({"name": s.name, "service": service, **attrs})
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, spans


def test_a_job_traced_from_submit_to_write(api_key, private_queues):
    pytest.importorskip("opentelemetry.sdk")
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    server, spans = _receiver()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    env = {"DOCBATCH_OTLP_ENDPOINT": endpoint, "DOCBATCH_QUEUE_PREFIX": private_queues}
    api = ApiProcess(env, migrate=False).wait_ready()
    worker = WorkerProcess(
        "summarize", env=fake_worker_env(private_queues, DOCBATCH_OTLP_ENDPOINT=endpoint)
    ).wait_ready()
    try:
        docs = [{"custom_id": f"d{i}", "text": f"text {i}"} for i in range(5)]
        job = httpx.post(
            f"{api.url}/v1/jobs",
            json={"tasks": ["summarize"], "documents": docs},
            headers={"Authorization": f"Bearer {api_key}"},
        ).json()
        wanted = {"docbatch.submit", "docbatch.unit.claim", "docbatch.batch", "docbatch.unit.write"}
        deadline = time.monotonic() + 90
        while True:
            mine = [
                s
                for s in spans
                if s.get("docbatch.job_id") == job["id"] or s["name"] == "docbatch.batch"
            ]
            if wanted <= {s["name"] for s in mine}:
                break
            assert time.monotonic() < deadline, (wanted, spans)
            time.sleep(0.3)
    finally:
        worker.stop()
        api.stop()
        server.shutdown()
    by_name = {s["name"]: s for s in mine}
    assert by_name["docbatch.submit"]["service"] == "docbatch-api"
    assert by_name["docbatch.submit"]["docbatch.tenant"] == "default"
    assert by_name["docbatch.unit.write"]["service"] == "docbatch-worker-summarize"
    assert by_name["docbatch.unit.write"]["docbatch.verdict"] == "done"
    units = {s["docbatch.unit_id"] for s in mine if s["name"] == "docbatch.unit.claim"}
    assert units and units == {
        s["docbatch.unit_id"] for s in mine if s["name"] == "docbatch.unit.write"
    }
