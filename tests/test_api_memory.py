"""The api's memory stays bounded whatever one request sends: a real uvicorn api process,
its peak resident set (VmHWM in /proc) read after each request."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

from tests.procs import ApiProcess

LIMIT_MB = 300


def _peak_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def _one_huge_line(megabytes: int) -> Iterator[bytes]:
    yield b'{"custom_id": "huge", "text": "'
    chunk = b"x" * (1 << 20)
    for _ in range(megabytes):
        yield chunk
    yield b'"}\n'


def test_peak_rss_stays_under_300_mb(api_key, private_queues):
    api = ApiProcess({"DOCBATCH_QUEUE_PREFIX": private_queues}, migrate=False).wait_ready()
    auth = {"Authorization": f"Bearer {api_key}"}
    try:
        pid = api.proc.pid
        started = _peak_mb(pid)
        # One 200 MB NDJSON line: refused while it arrives, never held whole.
        resp = httpx.post(
            f"{api.url}/v1/jobs",
            params={"tasks": "tags"},
            content=_one_huge_line(200),
            headers={**auth, "Content-Type": "application/x-ndjson"},
            timeout=600,
        )
        after_line = _peak_mb(pid)
        assert after_line < LIMIT_MB, f"peak RSS {after_line:.0f} MB (started at {started:.0f})"
        assert resp.status_code == 413, resp.text
        err = resp.json()["error"]
        assert (err["field"], err["line"]) == ("document", 1)
        assert "DOCBATCH_MAX_LINE_BYTES" in err["message"]

        # A JSON body just under its cap, made of many tiny documents (the most objects
        # per byte a JSON body can hold): parsed whole, still bounded.
        docs, size, i = [], 100, 0
        while True:
            doc = {"custom_id": f"d{i}", "text": "t"}
            size += len(json.dumps(doc)) + 2
            if size > 10_000_000:
                break
            docs.append(doc)
            i += 1
        body = json.dumps({"tasks": ["tags"], "documents": docs}).encode()
        resp = httpx.post(
            f"{api.url}/v1/jobs",
            content=body,
            headers={**auth, "Content-Type": "application/json"},
            timeout=600,
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["documents"] == len(docs)
        # (left queued on this test's private queues, which no worker reads)
        peak = _peak_mb(pid)
        print(
            f"api peak RSS: start {started:.0f} MB, after 200 MB line {after_line:.0f} MB, "
            f"after {len(docs)}-document JSON body {peak:.0f} MB"
        )
        assert peak < LIMIT_MB, f"peak RSS {peak:.0f} MB with a {len(body)}-byte JSON body"
    finally:
        api.stop()


def test_a_file_upload_with_an_over_long_line_is_refused_as_it_arrives(private_queues):
    """Issue 20 item 15: ``/v1/files`` refuses a 200 MB request line while reading it
    (a 400 naming the limit), and the api's peak stays under 300 MB."""
    from tests.fixtures import new_api_key

    api = ApiProcess({"DOCBATCH_QUEUE_PREFIX": private_queues}, migrate=False).wait_ready()
    boundary = "docbatchboundary"

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="r.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'
        ).encode()
        yield from _one_huge_line(200)
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        pid = api.proc.pid
        resp = httpx.post(
            f"{api.url}/v1/files",
            content=body(),
            headers={
                "Authorization": f"Bearer {new_api_key('memory')}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            timeout=600,
        )
        peak = _peak_mb(pid)
        print(f"api peak RSS after a 200 MB file line: {peak:.0f} MB")
        assert resp.status_code == 400, resp.text
        err = resp.json()["error"]
        assert err["code"] == "line_too_long" and err["param"] == "file"
        assert "DOCBATCH_MAX_DOCUMENT_BYTES" in err["message"]
        assert peak < LIMIT_MB, f"peak RSS {peak:.0f} MB"
        files = httpx.get(
            f"{api.url}/v1/files", headers={"Authorization": f"Bearer {new_api_key('memory')}"}
        )
        assert files.json()["data"] == []
    finally:
        api.stop()
