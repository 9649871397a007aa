"""Turning one top-level file into extractions: the sandbox, the limits, the expander that
follows attachments and archive members, and the identity an extraction is recorded (and
reused) under. No database, no lease: worker/extraction.py runs a unit's files through
``Expander`` and writes what it returns.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from collections.abc import Callable
from typing import Any

from docbatch.domain.extraction import Extraction, Extractor
from docbatch.domain.files import relative_name
from docbatch.schema.errors import InputError
from docbatch.schema.settings import Settings
from docbatch.schema.tables import DocumentFile, ResultStatus
from docbatch.worker.extract import detect
from docbatch.worker.extract.base import Attachment, Extracted, ExtractError, Limits, version_of
from docbatch.worker.extract.sandbox import Sandbox

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


def output_of(ex: Extracted, data: bytes) -> dict[str, Any]:
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


class Expander:
    """Extracts one top-level file and everything inside it, flattened (see Extraction).

    ``should_stop`` is asked before each member: once it says so the expansion ends and
    ``stopped`` is set (the unit is being cancelled; what was found is thrown away)."""

    def __init__(
        self, box: Sandbox, settings: Settings, should_stop: Callable[[], bool] | None = None
    ) -> None:
        self.box = box
        self.max_files = settings.extract_archive_max_files
        self.max_depth = settings.extract_max_depth
        self.should_stop = should_stop
        self.stopped = False

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
        out = output_of(ex, data)
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
            if self.stopped or (self.should_stop is not None and self.should_stop()):
                self.stopped = True
                return
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
            output = output_of(ex, att.data)
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


def too_big(f: DocumentFile, settings: Settings) -> str:
    return (
        f"the file is {f.bytes:,} bytes; the limit is {settings.extract_max_bytes:,} "
        "(DOCBATCH_EXTRACT_MAX_BYTES)"
    )
