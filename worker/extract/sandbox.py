"""Extraction in a child process: a hang or a crash costs one document, not the worker.

A long-lived child (forked once, restarted after a time-out or a crash) runs
``formats.extract``; the parent waits at most the time limit for each answer. Example::

    with Sandbox(limits) as box:
        result = box.extract(data, "report.pdf")   # Extracted, or raises ExtractError
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from docbatch.worker.extract.base import Extracted, ExtractError, Limits

Extractor = Callable[[bytes, str, Limits], Extracted]


def _serve(conn: Connection, limits: Limits, extractor: Extractor | None) -> None:
    from docbatch.worker.extract.formats import extract as default

    extract = extractor or default
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        data, name = job
        try:
            conn.send(("ok", extract(data, name, limits)))
        except ExtractError as exc:
            conn.send(("error", str(exc)))
        except MemoryError:
            conn.send(("error", "the extractor ran out of memory on this file"))
        except Exception as exc:  # a parser bug fails this file only
            conn.send(("error", f"the extractor failed: {type(exc).__name__}: {exc}"))


class _Child:
    """A forked child process (``os.fork``: a Celery prefork child is daemonic, and
    multiprocessing refuses children to daemonic processes)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exitcode: int | None = None

    def is_alive(self) -> bool:
        if self.exitcode is not None:
            return False
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.exitcode = -1
            return False
        if pid == 0:
            return True
        self.exitcode = os.waitstatus_to_exitcode(status)
        return False

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)


class Sandbox:
    """``extractor`` replaces ``formats.extract`` in the child (a seam for tests)."""

    def __init__(self, limits: Limits, extractor: Extractor | None = None) -> None:
        self.limits = limits
        self.extractor = extractor
        self._proc: _Child | None = None
        self._conn: Connection | None = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> Connection:
        if self._proc is None or not self._proc.is_alive():
            parent, child = mp.Pipe()
            pid = os.fork()
            if pid == 0:  # the child: serve until told to stop, never return
                code = 0
                try:
                    parent.close()
                    _serve(child, self.limits, self.extractor)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            child.close()
            self._proc = _Child(pid)
            self._conn = parent
        assert self._conn is not None
        return self._conn

    def extract(self, data: bytes, name: str) -> Extracted:
        conn = self._start()
        assert self._proc is not None
        try:
            conn.send((data, name))
            ready = conn.poll(self.limits.time_limit_seconds)
        except (BrokenPipeError, OSError):
            ready = False
        if not ready:
            crashed = not self._proc.is_alive()
            code = self._proc.exitcode
            self._kill()
            if crashed:
                raise ExtractError(f"the extractor crashed on this file (exit {code})")
            raise ExtractError(
                f"extraction took longer than {self.limits.time_limit_seconds:g} s "
                "(DOCBATCH_EXTRACT_TIME_LIMIT_SECONDS)"
            )
        try:
            status, value = conn.recv()
        except (EOFError, OSError):
            self._proc.join(1)
            code = self._proc.exitcode
            self._kill()
            raise ExtractError(f"the extractor crashed on this file (exit {code})") from None
        if status == "error":
            raise ExtractError(value)
        assert isinstance(value, Extracted)
        return value

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(2)
            except OSError:
                pass
        self._kill()
