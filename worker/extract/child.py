"""The sandbox child: a fresh interpreter that runs the extractors on files it is sent.

Started by ``sandbox.Sandbox`` as ``python -I -c ...`` (a new process image, not a fork:
it holds none of the worker's memory, connections or credentials), with a scrubbed
environment and only its channel open. First it arranges to die with its parent, then
takes the hello (limits), puts itself under resource limits (address space, CPU time,
file size, no core dumps), imports every extractor, and answers one JSON message per
file. Nothing it sends is unpickled: the parent reads JSON and checks every path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from docbatch.worker.extract.base import Budget, Extracted, ExtractError, Limits, Spool

Extractor = Callable[[Path, str, Limits, Spool], Extracted]
PR_SET_PDEATHSIG = 1
# CPU seconds one child may use in its life (RLIMIT_CPU's hard limit); past most of it,
# it retires and the parent starts a new one. Each file gets its time limit in CPU too.
LIFETIME_CPU_SECONDS = 3600.0


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux); elsewhere a thread watches."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it died before the prctl took hold
        os._exit(0)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _cpu_used() -> float:
    return time.process_time()  # user + system, no syscall where the vDSO has the clock


def limit_resources(limits: Limits) -> float:
    """Resource limits of this process (and anything it runs, e.g. tesseract); returns
    the hard CPU limit. Hard limits are final: an exploited parser cannot raise them."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.max_memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limits.max_memory_bytes,) * 2)
    # A member can be no bigger than the whole upload's budget; past it a write fails
    # with EFBIG (the signal is ignored) instead of killing the child.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    size = limits.archive_max_total_bytes + (1 << 20)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    hard = math.ceil(_cpu_used() + max(LIFETIME_CPU_SECONDS, 20 * limits.time_limit_seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
    return float(hard)


class _CpuLimit:
    """The soft CPU limit (SIGXCPU) kept between one and two time limits ahead of what
    was used: a file cannot use much more CPU than its time limit even if the parent's
    clock failed to stop it, and a small file costs no syscall to re-arm it."""

    def __init__(self, limits: Limits, hard: float) -> None:
        self.step, self.hard, self.soft = limits.time_limit_seconds + 1, hard, 0.0

    def arm(self) -> None:
        used = _cpu_used()
        if self.soft - used < self.step:
            self.soft = min(self.hard, math.ceil(used + 2 * self.step))
            resource.setrlimit(resource.RLIMIT_CPU, (int(self.soft), int(self.hard)))


def encode(ex: Extracted) -> dict[str, Any]:
    return {
        "text": ex.text,
        "kind": ex.kind,
        "library": ex.library,
        "pages": ex.pages,
        "sections": ex.sections,
        "metadata": ex.metadata,
        "attachments": [
            {"name": a.name, "path": str(a.path) if a.path else None, "error": a.error}
            for a in ex.attachments
        ],
    }


def _load(extractor: str | None) -> Extractor:
    from docbatch.worker.extract import registry
    from docbatch.worker.extract.formats import extract

    for fmt in registry.FORMATS:  # imported now, so the first file of each kind is not slower
        with contextlib.suppress(ImportError):
            fmt.load()
    if not extractor:
        return extract
    import importlib

    module, _, name = extractor.partition(":")
    fn: Extractor = getattr(importlib.import_module(module), name)
    return fn


def _answer(extract: Extractor, job: dict[str, Any], limits: Limits) -> dict[str, Any]:
    spool = Spool(Path(job["spool"]), Budget.from_dict(job["budget"], limits))
    try:
        return {"ok": encode(extract(Path(job["path"]), job["name"], limits, spool))}
    except ExtractError as exc:
        return {"error": str(exc)}
    except MemoryError:
        return {
            "error": f"the extractor ran out of memory on this file (more than "
            f"{limits.max_memory_bytes:,} bytes; DOCBATCH_EXTRACT_MAX_MEMORY_BYTES)"
        }
    except Exception as exc:  # a parser bug fails this file only
        return {"error": f"the extractor failed: {type(exc).__name__}: {exc}"}


def serve(conn: Connection) -> None:
    hello = json.loads(conn.recv_bytes())
    names = {f.name for f in dataclasses.fields(Limits)}
    limits = Limits(**{k: v for k, v in hello["limits"].items() if k in names})
    hard = limit_resources(limits)
    cpu = _CpuLimit(limits, hard)
    extract = _load(hello.get("extractor"))
    conn.send_bytes(b'{"ready": true}')
    while True:
        try:
            message = conn.recv_bytes()
        except EOFError:
            return
        job = json.loads(message)
        if job is None:
            return
        cpu.arm()
        reply = _answer(extract, job, limits)
        # Near the end of its CPU life: answer, then leave (the parent starts another).
        reply["retire"] = hard - _cpu_used() < 2 * limits.time_limit_seconds + 2
        conn.send_bytes(json.dumps(reply, default=str).encode())
        if reply["retire"]:
            return


def main(fd: int, parent: int) -> None:
    die_with_parent(parent)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C reaches the worker, which stops us
    conn = Connection(fd)
    try:
        serve(conn)
    except EOFError:
        pass
    finally:
        sys.stdout.flush()
