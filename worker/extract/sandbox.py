"""Extraction in a child process: a hang or a crash costs one document, not the worker,
and a parser exploit finds nothing worth taking.

The child (``child.py``) is a fresh interpreter started once and reused, restarted after
a time-out, a crash or when it retires: it is exec'd, not forked, so it holds none of the
worker's memory (no settings, no database or broker connection, no credentials); its
environment is scrubbed to a few harmless variables; it inherits no descriptor but its
channel (and stderr, for tracebacks); it runs under resource limits (address space, CPU
time, file size, no core dumps) and in a session of its own, and dies with its parent.

The parent sends a path and receives JSON (never a pickle), and checks what comes back:
every file the child says it found must be a regular file in the spool it was given,
within the upload's budget. The parent waits at most the time limit for each answer.
Example::

    with Sandbox(limits) as box:
        result = box.extract(Path("report.pdf"), "report.pdf", spool)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from docbatch.worker.extract.base import (
    Attachment,
    Budget,
    Extracted,
    ExtractError,
    Limits,
    Spool,
)

Extractor = Callable[[Path, str, Limits, Spool], Extracted]
START_SECONDS = 120.0  # imports of every extractor, on a loaded machine
# Variables the child keeps; everything else (DOCBATCH_*, database and broker URLs,
# cloud credentials) stays behind.
KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TESSDATA_PREFIX")
_BOOT = (
    "import json, sys; sys.path[:0] = json.loads(sys.argv[3]); "
    "from docbatch.worker.extract.child import main; main(int(sys.argv[1]), int(sys.argv[2]))"
)


class SandboxError(RuntimeError):
    """The sandbox child could not start: no file's fault (the unit is retried)."""


def child_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in KEEP_ENV if k in os.environ}
    env["OMP_THREAD_LIMIT"] = "1"  # tesseract: one core per page
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class Sandbox:
    """``extractor`` (a module-level function, by import path) replaces
    ``formats.extract`` in the child: a seam for tests."""

    def __init__(self, limits: Limits, extractor: Extractor | None = None) -> None:
        self.limits = limits
        self.extractor = f"{extractor.__module__}:{extractor.__qualname__}" if extractor else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._scratch_dir: Path | None = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> Connection:
        if self._proc is not None and self._proc.poll() is None and self._conn is not None:
            return self._conn
        self._kill()
        ours, theirs = socket.socketpair()
        try:
            cmd = [sys.executable, "-I", "-c", _BOOT, str(theirs.fileno()), str(os.getpid())]
            self._proc = subprocess.Popen(
                [*cmd, json.dumps(sys.path)],
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                close_fds=True,
                start_new_session=True,  # a kill of its group takes its own children too
                cwd=tempfile.gettempdir(),
            )
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        self._conn = conn
        hello = {"limits": asdict(self.limits), "extractor": self.extractor}
        try:
            conn.send_bytes(json.dumps(hello).encode())
            ready = conn.poll(START_SECONDS) and json.loads(conn.recv_bytes()).get("ready")
        except (OSError, EOFError, ValueError):
            ready = False
        if not ready:
            code = self._proc.poll()
            self._kill()
            raise SandboxError(f"the extraction sandbox did not start (exit {code})")
        return conn

    def _scratch(self) -> Path:
        if self._scratch_dir is None:
            self._scratch_dir = Path(tempfile.mkdtemp(prefix="docbatch-sandbox-"))
        return self._scratch_dir

    def extract(self, file: bytes | Path, name: str, spool: Spool | None = None) -> Extracted:
        """Extract one file in the child; files found inside it are in ``spool``, charged
        to its budget. Without one, they go to the sandbox's scratch directory (with the
        budget of an upload of this file), which lives until the sandbox closes."""
        if isinstance(file, bytes):
            # A new file each time: rewriting one makes ext4 flush it on close (ms).
            fd, name_on_disk = tempfile.mkstemp(dir=self._scratch(), suffix=".in")
            with os.fdopen(fd, "wb") as fh:
                fh.write(file)
            try:
                return self._extract(Path(name_on_disk), name, spool)
            finally:
                os.unlink(name_on_disk)
        return self._extract(file, name, spool)

    def _extract(self, file: Path, name: str, spool: Spool | None) -> Extracted:
        if spool is None:
            spool = Spool(self._scratch(), Budget.for_upload(self.limits, file.stat().st_size))
        conn = self._start()
        job = {
            "path": str(file),
            "name": name,
            "spool": str(spool.directory),
            "budget": spool.budget.to_dict(),
        }
        try:
            conn.send_bytes(json.dumps(job).encode())
            ready = conn.poll(self.limits.time_limit_seconds)
        except OSError:
            ready = False
        if not ready:
            crashed = self._proc is None or self._proc.poll() is not None
            reason = self._death()
            self._kill()
            if crashed:
                raise ExtractError(reason)
            raise ExtractError(
                f"extraction took longer than {self.limits.time_limit_seconds:g} s "
                "(DOCBATCH_EXTRACT_TIME_LIMIT_SECONDS)"
            )
        try:
            # Bounded: a child that goes rogue cannot make the worker hold more.
            reply = json.loads(conn.recv_bytes(self._max_reply()))
        except (EOFError, OSError, ValueError):
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(1)
            reason = self._death()
            self._kill()
            raise ExtractError(reason) from None
        if reply.get("retire"):
            self.close()
        if "error" in reply:
            raise ExtractError(str(reply["error"]))
        return self._checked(reply["ok"], spool)

    def _max_reply(self) -> int:
        # JSON escapes a character in at most 12 bytes; page maps, metadata and names
        # get 64 MiB beside it.
        return 12 * self.limits.max_text_chars + (64 << 20)

    def _death(self) -> str:
        code = self._proc.poll() if self._proc is not None else None
        if code == -signal.SIGXCPU:
            return (
                f"the extractor used more than {self.limits.time_limit_seconds:g} s of CPU "
                "on this file (DOCBATCH_EXTRACT_TIME_LIMIT_SECONDS)"
            )
        return f"the extractor crashed on this file (exit {code})"

    def _checked(self, ex: dict[str, Any], spool: Spool) -> Extracted:
        """The child's answer as an ``Extracted``, after checking the files it names."""
        found: list[Attachment] = []
        root = spool.directory.resolve()
        try:
            for a in ex["attachments"]:
                if a["path"] is None:
                    found.append(Attachment(str(a["name"]), None, 0, error=str(a["error"])))
                    continue
                path = Path(a["path"])
                info = os.lstat(path)
                if path.parent.resolve() != root or not stat.S_ISREG(info.st_mode):
                    raise ValueError(f"{path} is not a file of its spool")
                found.append(Attachment(str(a["name"]), path, info.st_size))
            result = Extracted(
                text=str(ex["text"]),
                kind=str(ex["kind"]),
                library=str(ex["library"]),
                pages=[(int(o), int(p)) for o, p in ex["pages"]],
                sections=[(int(o), str(s)) for o, s in ex["sections"]],
                metadata=dict(ex["metadata"]),
                attachments=found,
            )
            # Charge what was found to the upload's budget (the child had a copy of it).
            spool.budget.check(files=len(found), nbytes=sum(a.size for a in found))
            spool.budget.files -= len(found)
            spool.budget.bytes -= sum(a.size for a in found)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            _remove(found)
            raise ExtractError(f"the extractor answered something unexpected ({exc})") from None
        except ExtractError:
            _remove(found)
            raise
        return result

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        if self._conn is not None and self._proc is not None and self._proc.poll() is None:
            try:
                self._conn.send_bytes(b"null")
                self._proc.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()
        if self._scratch_dir is not None:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)
            self._scratch_dir = None


def _remove(found: list[Attachment]) -> None:
    for a in found:
        if a.path is not None:
            with contextlib.suppress(OSError):
                a.path.unlink()
