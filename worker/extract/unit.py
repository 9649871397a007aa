"""One extract unit's compute step: its files, from their blobs to extractions on disk.

``extract_files`` reads each file's blob into a spool directory of the unit, runs it
through the ``Expander`` (the sandbox child unpacks members into the same directory),
and returns the outcomes with their texts and members still on disk: the unit's closing
transaction (``docbatch.domain.extraction.record``) streams them into rows and blobs, and
then the directory goes. Nothing is written to the database before that transaction, so
a crash leaves no orphaned blob, only a directory that the next start of a worker on
this host removes (``sweep_spools``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from docbatch.domain import blobs
from docbatch.domain.extraction import Extraction, Reused
from docbatch.schema.settings import Settings
from docbatch.schema.tables import DocumentFile, ResultStatus
from docbatch.worker.extract.expand import Expander, Stopped, sandbox_for, too_big

log = logging.getLogger("docbatch.worker")
_PREFIX = "docbatch-spool-"


@dataclass
class UnitExtractions:
    """What a unit's files became (document id -> Extraction), and whether a cancel
    stopped it; a context manager that removes the spooled files on exit."""

    directory: Path
    outcomes: dict[int, Extraction] = field(default_factory=dict)
    cancelled: bool = False

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):  # the process's root too, if nothing else is in it
            self.directory.parent.rmdir()

    def __enter__(self) -> UnitExtractions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _root(settings: Settings) -> Path:
    return Path(settings.extract_spool_dir or tempfile.gettempdir())


def spool_root(settings: Settings) -> Path:
    """This process's spool directory (named for the host and pid, so a sweep can tell
    whose process is gone)."""
    path = _root(settings) / f"{_PREFIX}{socket.gethostname()}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def sweep_spools(settings: Settings) -> None:
    """Remove the spools of this host's processes that are gone (killed mid-unit)."""
    host = f"{_PREFIX}{socket.gethostname()}-"
    with contextlib.suppress(OSError):
        for entry in _root(settings).iterdir():
            pid = entry.name.removeprefix(host)
            if not entry.name.startswith(host) or not pid.isdigit():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                log.info("removing the spool of a process that is gone: %s", entry)
                shutil.rmtree(entry, ignore_errors=True)
            except PermissionError:
                pass  # alive, someone else's


def _spool_blob(oid: int, directory: Path, settings: Settings) -> tuple[Path, int, str]:
    """The blob's bytes in a new file of ``directory``: (path, size, sha256 hex)."""
    fd, path = tempfile.mkstemp(dir=directory, suffix=".in")
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(fd, "wb") as fh:
        for block in blobs.read(oid, settings=settings):
            fh.write(block)
            digest.update(block)
            size += len(block)
    return Path(path), size, digest.hexdigest()


def extract_files(
    documents: list[tuple[int, str]],
    files: dict[int, DocumentFile],
    reused: dict[int, Reused],
    settings: Settings,
    should_stop: Callable[[], bool],
) -> UnitExtractions:
    """Extract a unit's ``documents`` (id, custom_id): a reused extraction is copied,
    everything else runs in this process's sandbox."""
    found = UnitExtractions(Path(tempfile.mkdtemp(dir=spool_root(settings))))
    try:
        expander = Expander(sandbox_for(settings), settings, found.directory, should_stop)
        for doc_id, name in documents:
            if should_stop():
                found.cancelled = True
                break
            f = files.get(doc_id)
            if doc_id in reused:
                earlier = reused[doc_id]
                found.outcomes[doc_id] = Extraction(
                    name,
                    ResultStatus.succeeded,
                    output=earlier.output,
                    library=earlier.output.get("library"),
                    reused_from=earlier.document_id,
                )
            elif f is None:  # a text document in an extract range cannot happen; say so
                found.outcomes[doc_id] = Extraction(
                    name, ResultStatus.failed, error="no file stored for this document"
                )
            elif f.blob_oid is None:
                found.outcomes[doc_id] = Extraction(
                    name, ResultStatus.failed, error=too_big(f, settings)
                )
            else:
                path, size, sha256 = _spool_blob(f.blob_oid, found.directory, settings)
                found.outcomes[doc_id] = expander.top(name, path, (size, sha256))
    except Stopped:
        found.cancelled = True
    except BaseException:
        found.close()
        raise
    return found
