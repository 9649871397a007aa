"""The sandbox child a real extract worker runs its parsers in: it holds no credentials
and no inherited descriptor, lives under resource limits, and dies with its worker."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from docbatch.worker.extract.base import Extracted, ExtractError, Limits, Spool
from docbatch.worker.extract.formats import extract
from docbatch.worker.extract.sandbox import Sandbox
from tests.conftest import DATABASE_URL, servers
from tests.files import make_long_pdf
from tests.fixtures import WorkerProcess

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _sandbox_children(worker: WorkerProcess, timeout: float = 60) -> dict[int, int]:
    """{sandbox child pid: its pool process}, once every pool process has one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pool = worker.children()
        found = {child: p for p in pool for child in _children(p)}
        if pool and len(found) >= len(pool):
            return found
        time.sleep(0.2)
    raise TimeoutError(f"no sandbox child under {worker.children()}:\n{worker.log[-2000:]}")


def _limits(pid: int) -> dict[str, str]:
    """/proc/PID/limits as {name: soft limit}."""
    lines = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {line[:26].strip(): line[26:47].strip() for line in lines}


def test_the_sandbox_child_holds_no_credentials_descriptors_or_unlimited_memory(private_queues):
    """It was a fork of the worker: the database and broker URLs in its environment (and
    memory), the worker's sockets open, no memory limit. Now it is a fresh interpreter
    with a scrubbed environment, only its channel and stdio, and resource limits."""
    worker = WorkerProcess(
        "extract",
        env={
            "DOCBATCH_QUEUE_PREFIX": private_queues,
            "DOCBATCH_EXTRACT_MAX_MEMORY_BYTES": "1500000000",
            "DOCBATCH_TEST_SECRET_CANARY": "canary-7f3a",
        },
    ).wait_ready()
    try:
        for child in _sandbox_children(worker):
            environ = Path(f"/proc/{child}/environ").read_bytes().decode(errors="replace")
            assert "DOCBATCH_" not in environ, environ
            assert DATABASE_URL not in environ and servers().broker_url not in environ
            assert "canary-7f3a" not in environ
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            assert b"docbatch.worker.extract.child" in cmdline, cmdline  # exec'd, not forked
            fds = sorted(int(fd) for fd in os.listdir(f"/proc/{child}/fd"))
            assert len(fds) <= 4 and fds[:3] == [0, 1, 2], fds  # stdio and its channel
            limits = _limits(child)
            assert limits["Max address space"] == "1500000000", limits
            assert limits["Max core file size"] == "0", limits
            assert limits["Max file size"] != "unlimited", limits
            assert limits["Max cpu time"] != "unlimited", limits
    finally:
        worker.stop()


def test_the_sandbox_child_dies_with_its_worker(api, private_queues):
    """SIGKILL the worker process while its child parses a long PDF: the child went on
    parsing for as long as the file took; now it is gone at once."""
    worker = WorkerProcess(
        "extract",
        env={
            "DOCBATCH_QUEUE_PREFIX": private_queues,
            "DOCBATCH_EXTRACT_MAX_PAGES": "100000",
            "DOCBATCH_EXTRACT_MAX_TEXT_CHARS": "100000000",
            "DOCBATCH_EXTRACT_TIME_LIMIT_SECONDS": "300",
        },
    ).wait_ready()
    slow = make_long_pdf(20000)  # seconds of PDFium on a quiet machine
    resp = api.post("/v1/jobs", files=[("file", ("slow.pdf", slow))], data={"tasks": "summarize"})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    try:
        # Triggered by progress: the child whose CPU time grows is parsing the file.
        children = _sandbox_children(worker)
        busy = _busy(children, timeout=120)
        os.kill(children[busy], signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _alive(busy) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(busy), f"sandbox child {busy} outlived its worker"
    finally:
        api.post(f"/v1/jobs/{job_id}/cancel")
        worker.stop()


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _busy(children: dict[int, int], timeout: float) -> int:
    start = {pid: _cpu_ticks(pid) for pid in children}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in children:
            if _alive(pid) and _cpu_ticks(pid) - start[pid] > 50:  # half a second of CPU
                return pid
        time.sleep(0.1)
    raise TimeoutError("no sandbox child started on the file")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _allocate(file: Path, name: str, limits: Limits, spool: Spool) -> Extracted:
    if file.read_bytes() == b"ALLOCATE":
        hog = bytearray(1 << 30)  # 1 GiB: over the child's address space
        return Extracted(str(len(hog)), "text", "test")
    return extract(file, name, limits, spool)


def test_a_parser_past_the_memory_limit_fails_its_file_alone(tmp_path):
    """The child's address space is limited (DOCBATCH_EXTRACT_MAX_MEMORY_BYTES): a parser
    that wants more fails that file, saying so, and the next file is read."""
    with Sandbox(Limits(max_memory_bytes=700_000_000), extractor=_allocate) as box:
        assert box.extract(b"before", "a.txt").text == "before"
        with pytest.raises(ExtractError, match="ran out of memory.*MAX_MEMORY_BYTES"):
            box.extract(b"ALLOCATE", "hog.bin")
        assert box.extract(b"after", "b.txt").text == "after"
