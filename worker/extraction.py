"""The extract stage's worker: a unit's files become text, in a sandbox child. No model.

``run_extract_unit`` claims an ``extract`` unit (under a lease on Postgres, with a
heartbeat), reads each document's original bytes from its blob, extracts them in the
process's ``Sandbox`` (a child process with a time limit per file: a parser that
hangs or crashes costs that file, never the worker), follows attachments and archive
members (within DOCBATCH_EXTRACT_ARCHIVE_MAX_FILES and DOCBATCH_EXTRACT_MAX_DEPTH),
and hands the outcomes to ``docbatch.domain.extraction.record``, which writes them and the
unit's close in one transaction; the model units that waited on these files are
published after it commits. An earlier extraction of the same bytes by the same
extractor versions is copied instead of run again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from docbatch.domain import blobs, ledger
from docbatch.domain.extraction import Extraction, Extractor, earlier, files_of, record
from docbatch.domain.files import relative_name
from docbatch.schema.db import is_sqlite, transaction
from docbatch.schema.errors import InputError
from docbatch.schema.settings import Settings
from docbatch.schema.tables import EXTRACT, DocumentFile, ResultStatus, Unit, UnitState
from docbatch.worker.extract import detect
from docbatch.worker.extract.base import Attachment, Extracted, ExtractError, Limits, version_of
from docbatch.worker.extract.sandbox import Sandbox
from docbatch.worker.heartbeat import heartbeat
from docbatch.worker.runner import Outcome, cancel_watcher, worker_name

log = logging.getLogger("docbatch.worker")
LIBRARIES = ("pypdfium2", "python-docx", "trafilatura", "charset-normalizer", "olefile")
ARCHIVES = (detect.ZIP, detect.TAR)
_sandbox: Sandbox | None = None


def limits_for(settings: Settings) -> Limits:
    return Limits(
        max_pages=settings.extract_max_pages,
        max_bytes=settings.extract_max_bytes,
        max_text_chars=settings.extract_max_text_chars,
        archive_max_files=settings.extract_archive_max_files,
        archive_max_total_bytes=settings.extract_archive_max_total_bytes,
        archive_max_ratio=settings.extract_archive_max_ratio,
        ocr=settings.extract_ocr,
        ocr_languages=settings.extract_ocr_languages,
        time_limit_seconds=settings.extract_time_limit_seconds,
    )


@functools.cache
def _versions(ocr: bool) -> str:
    names = [version_of(lib) for lib in LIBRARIES]
    if ocr:
        with contextlib.suppress(Exception):  # no tesseract: OCR fails per file, saying so
            import pytesseract

            names.append(f"tesseract {pytesseract.get_tesseract_version()}")
    return "; ".join(names)


def extractor_for(settings: Settings) -> Extractor:
    """What this worker's extractions are recorded as (and reused by)."""
    versions = _versions(settings.extract_ocr)
    params: dict[str, Any] = {
        "ocr": settings.extract_ocr,
        "max_pages": settings.extract_max_pages,
        "max_text_chars": settings.extract_max_text_chars,
    }
    if settings.extract_ocr:
        params["ocr_languages"] = settings.extract_ocr_languages
    digest = hashlib.sha256(versions.encode()).hexdigest()[:16]
    return Extractor(revision=f"extract-{digest}", params=params)


def sandbox_for(settings: Settings) -> Sandbox:
    """This process's sandbox (one child process, started on first use)."""
    global _sandbox
    limits = limits_for(settings)
    if _sandbox is None or _sandbox.limits != limits:
        if _sandbox is not None:
            _sandbox.close()
        _sandbox = Sandbox(limits)
    return _sandbox


def warm_up(settings: Settings) -> None:
    """Import the extractors before the sandbox child forks, so it starts ready."""
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # tesseract: one core per page
    for module in ("pypdfium2", "docx", "trafilatura", "charset_normalizer", "olefile"):
        with contextlib.suppress(ImportError):
            __import__(module)
    sandbox_for(settings)._start()


def _output(ex: Extracted, data: bytes) -> dict[str, Any]:
    return {
        "kind": ex.kind,
        "library": ex.library,
        "chars": len(ex.text),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "pages": [list(p) for p in ex.pages],
        "sections": [list(s) for s in ex.sections],
        "metadata": ex.metadata,
    }


def _child_name(prefix: str, name: str) -> str:
    try:
        return f"{prefix}/{relative_name(name)}"
    except InputError:
        return f"{prefix}/file"


class _Expander:
    """Extracts one top-level file and everything inside it, flattened (see Extraction)."""

    def __init__(self, box: Sandbox, settings: Settings) -> None:
        self.box = box
        self.max_files = settings.extract_archive_max_files
        self.max_depth = settings.extract_max_depth

    def top(self, name: str, data: bytes) -> Extraction:
        try:
            ex = self.box.extract(data, name)
        except ExtractError as exc:
            return Extraction(name, ResultStatus.failed, error=str(exc))
        children: list[Extraction] = []
        if ex.kind in ARCHIVES:
            self._add(ex.attachments, name, None, 1, children, archive=name)
            return Extraction(name, ResultStatus.succeeded, children=children, replaced=True)
        self._add(ex.attachments, name, -1, 1, children, archive=None)
        out = _output(ex, data)
        out["attachments"] = [c.name for c in children if c.parent == -1]
        return Extraction(
            name, ResultStatus.succeeded, ex.text, out, library=ex.library, children=children
        )

    def _add(
        self,
        found: list[Attachment],
        prefix: str,
        parent: int | None,
        depth: int,
        out: list[Extraction],
        archive: str | None,
    ) -> None:
        for att in found:
            name = _child_name(prefix, att.name)
            if len(out) >= self.max_files:
                log.warning("%s: more than %d files inside; the rest skipped", prefix, len(out))
                out.append(
                    Extraction(
                        name,
                        ResultStatus.failed,
                        error=f"more than {self.max_files} files inside {prefix}; the limit "
                        "is DOCBATCH_EXTRACT_ARCHIVE_MAX_FILES (this and later files skipped)",
                        data=att.data,
                        parent=parent,
                    )
                )
                return
            if depth > self.max_depth:
                out.append(
                    Extraction(
                        name,
                        ResultStatus.failed,
                        error=f"nested more than {self.max_depth} levels deep "
                        "(DOCBATCH_EXTRACT_MAX_DEPTH)",
                        data=att.data,
                        parent=parent,
                    )
                )
                continue
            try:
                ex = self.box.extract(att.data, name)
            except ExtractError as exc:
                out.append(
                    Extraction(
                        name, ResultStatus.failed, error=str(exc), data=att.data, parent=parent
                    )
                )
                continue
            if ex.kind in ARCHIVES:  # its files belong where the archive was
                self._add(ex.attachments, name, parent, depth + 1, out, archive=name)
                continue
            output = _output(ex, att.data)
            output["parent"] = prefix if parent is not None else None
            if archive:
                output["archive"] = archive
            child = Extraction(
                name,
                ResultStatus.succeeded,
                ex.text,
                output,
                library=ex.library,
                data=att.data,
                parent=parent,
            )
            out.append(child)
            self._add(ex.attachments, name, len(out) - 1, depth + 1, out, archive=None)


def _too_big(f: DocumentFile, settings: Settings) -> str:
    return (
        f"the file is {f.bytes:,} bytes; the limit is {settings.extract_max_bytes:,} "
        "(DOCBATCH_EXTRACT_MAX_BYTES)"
    )


@contextlib.contextmanager
def _held(unit_id: int, settings: Settings) -> Iterator[bool]:
    """The unit's lease and heartbeat while this block runs; False: another live worker
    holds it. SQLite has no leases: a heartbeat only."""
    if is_sqlite(settings):
        with heartbeat(unit_id, settings.unit_heartbeat_seconds):
            yield True
        return
    from docbatch.worker.pipeline import drop_lease, get_lease

    try:
        lease = get_lease(settings)
        got = lease.acquire(unit_id)
    except Exception:
        drop_lease()
        raise
    try:
        yield got
    finally:
        if got:
            with contextlib.suppress(Exception):
                lease.release(unit_id)


def run_extract_unit(unit_id: int, settings: Settings) -> Outcome:
    """Extract one unit's files and write them; returns what happened."""
    with _held(unit_id, settings) as ours:
        if not ours:
            return Outcome.skipped
        return _run(unit_id, settings)


def _run(unit_id: int, settings: Settings) -> Outcome:
    extractor = extractor_for(settings)
    with transaction(settings) as s:
        claim = ledger.claim_unit(s, unit_id, worker_name(), settings.max_unit_attempts)
        if claim is None:
            return Outcome.skipped
        job_id, tenant = claim.job.id, claim.job.tenant
        if claim.unit.task != EXTRACT:
            ledger.close_unit(
                s,
                claim.unit,
                UnitState.failed,
                reason=f"unit for task {claim.unit.task!r} reached an 'extract' worker",
            )
            ledger.finalize_job_if_done(s, claim.job)
            return Outcome.misrouted
        ids = [d[0] for d in claim.documents]
        names = {d[0]: d[1] for d in claim.documents}
        files = files_of(s, ids)
        reused = {
            doc_id: found
            for doc_id, f in files.items()
            if f.sha256 and (found := earlier(s, tenant, job_id, f.sha256, extractor))
        }
        split_off = claim.split_off
    if split_off:
        from docbatch.domain.publish import republish

        with contextlib.suppress(Exception):  # queued in Postgres: the reconciler sends them
            republish([u for u, _ in split_off], settings)
    outcomes: dict[int, Extraction] = {}
    should_stop = cancel_watcher(job_id)
    expander = _Expander(sandbox_for(settings), settings)
    cancelled = False
    for doc_id in ids:
        if should_stop():
            cancelled = True
            break
        f = files.get(doc_id)
        name = names[doc_id]
        if doc_id in reused:
            text, output = reused[doc_id]
            outcomes[doc_id] = Extraction(
                name,
                ResultStatus.succeeded,
                text,
                output,
                library=output.get("library"),
                reused=True,
            )
        elif f is None:  # a text document in an extract range cannot happen; say so if it does
            outcomes[doc_id] = Extraction(
                name, ResultStatus.failed, error="no file stored for this document"
            )
        elif f.blob_oid is None:
            outcomes[doc_id] = Extraction(name, ResultStatus.failed, error=_too_big(f, settings))
        else:
            data = b"".join(blobs.read(f.blob_oid, settings=settings))
            outcomes[doc_id] = expander.top(name, data)
    return _write(unit_id, job_id, outcomes, extractor, settings, cancelled)


def _write(
    unit_id: int,
    job_id: str,
    outcomes: dict[int, Extraction],
    extractor: Extractor,
    settings: Settings,
    cancelled: bool,
) -> Outcome:
    from docbatch.schema.tables import JobStatus

    with transaction(settings) as s:
        job = ledger.lock_job(s, job_id)
        unit = s.get(Unit, unit_id)
        if unit is None or unit.state != UnitState.running.value:
            return Outcome.superseded
        if cancelled or job.status in (JobStatus.cancelling.value, JobStatus.cancelled.value):
            ledger.close_unit(s, unit, UnitState.cancelled, reason="job cancelled")
            outcome = Outcome.cancelled
        else:
            record(s, settings, unit, job, outcomes, extractor)
            outcome = Outcome.done
        ledger.finalize_job_if_done(s, job)
        released = s.info.pop("released_units", [])
    if released:
        from docbatch.domain.publish import republish

        try:
            republish([u for u, _ in released], settings)
        except Exception:  # queued in Postgres: the reconciler publishes them
            log.exception("could not publish units %s", released)
    return outcome
