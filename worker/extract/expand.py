"""Turning one top-level file into extractions: the limits, the expander that follows
attachments and archive members, and the identity an extraction is recorded (and
reused) under. No database, no lease: ``unit.py`` runs a unit's files through
``Expander`` and the domain writes what it returns.

Everything found inside a file stays on disk until the write: members are spooled by
the sandbox child, texts by the expander; the worker holds one file's text at a time.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docbatch.domain.extraction import Extraction, Extractor
from docbatch.domain.files import relative_name
from docbatch.schema.errors import InputError
from docbatch.schema.settings import Settings
from docbatch.schema.tables import DocumentFile, ResultStatus
from docbatch.worker.extract import registry
from docbatch.worker.extract.base import (
    Attachment,
    Budget,
    Extracted,
    ExtractError,
    Limits,
    Spool,
    version_of,
)
from docbatch.worker.extract.sandbox import Sandbox

log = logging.getLogger("docbatch.worker")
_sandbox: Sandbox | None = None
# Postgres text holds neither NUL nor lone surrogates; other C0 controls in a name only
# confuse whoever reads it.
_NOT_STORABLE = re.compile(r"[\x00\ud800-\udfff]")
_NAME_CONTROLS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


class Stopped(Exception):
    """``should_stop`` said so (the job is being cancelled) between two files."""


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
        max_memory_bytes=settings.extract_max_memory_bytes,
    )


def _version(library: str) -> str:
    if library == registry.STDLIB:
        return f"python {platform.python_version()}"
    if library == registry.TESSERACT:
        import pytesseract

        return f"tesseract {pytesseract.get_tesseract_version()}"
    try:
        return version_of(library)
    except Exception:  # not installed: its format fails per file, saying so
        return f"{library} (not installed)"


@functools.cache
def versions(ocr: bool) -> str:
    """The version of every library some format's text depends on (``registry``)."""
    names = []
    for library in registry.libraries(ocr):
        with contextlib.suppress(Exception):  # no tesseract: OCR fails per file, saying so
            names.append(_version(library))
    return "; ".join(names)


def extractor_for(settings: Settings) -> Extractor:
    """What this worker's extractions are recorded as (and reused by)."""
    params: dict[str, Any] = {
        "ocr": settings.extract_ocr,
        "max_pages": settings.extract_max_pages,
        "max_text_chars": settings.extract_max_text_chars,
    }
    if settings.extract_ocr:
        params["ocr_languages"] = settings.extract_ocr_languages
    digest = hashlib.sha256(versions(settings.extract_ocr).encode()).hexdigest()[:16]
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


def close_sandbox() -> None:
    global _sandbox
    if _sandbox is not None:
        _sandbox.close()
        _sandbox = None


def warm_up(settings: Settings) -> None:
    """Start the sandbox child (it imports the extractors) before the first unit."""
    from docbatch.worker.extract.unit import sweep_spools

    sweep_spools(settings)
    sandbox_for(settings)._start()


def storable(text: str) -> str:
    """``text`` as Postgres can store it: no NUL, no lone surrogate (both carry no
    meaning in extracted text; an e-mail header can hold either)."""
    return _NOT_STORABLE.sub("\ufffd", text) if _NOT_STORABLE.search(text) else text


def _storable_tree(value: Any) -> Any:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list | tuple):
        return [_storable_tree(v) for v in value]
    if isinstance(value, dict):
        return {storable(str(k)): _storable_tree(v) for k, v in value.items()}
    return value


def file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def output_of(ex: Extracted, size: int, sha256: str) -> dict[str, Any]:
    out: dict[str, Any] = _storable_tree(
        {
            "kind": ex.kind,
            "library": ex.library,
            "chars": len(ex.text),
            "bytes": size,
            "sha256": sha256,
            "pages": [list(p) for p in ex.pages],
            "sections": [list(s) for s in ex.sections],
            "metadata": ex.metadata,
        }
    )
    return out


def _child_name(prefix: str, name: str) -> str:
    name = _NAME_CONTROLS.sub("_", name)
    try:
        return f"{prefix}/{relative_name(name)}"
    except InputError:
        return f"{prefix}/file"


class Expander:
    """Extracts one top-level file and everything inside it, flattened (see Extraction),
    within one budget for the whole upload; texts and members are spooled to
    ``directory``. ``should_stop`` is asked before each file inside (a cancel reaches
    inside an archive); when it says yes, ``top`` raises ``Stopped``."""

    def __init__(
        self,
        box: Sandbox,
        settings: Settings,
        directory: Path,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.box = box
        self.limits = limits_for(settings)
        self.max_depth = settings.extract_max_depth
        self.directory = directory
        self.should_stop = should_stop or (lambda: False)

    def _spool_text(self, text: str) -> Path:
        fd, path = tempfile.mkstemp(dir=self.directory, suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(storable(text))
        return Path(path)

    def top(self, name: str, path: Path, digest: tuple[int, str] | None = None) -> Extraction:
        """``path``: the file's bytes, spooled; ``digest``: their (size, sha256) if known."""
        size, sha256 = digest or file_digest(path)
        spool = Spool(self.directory, Budget.for_upload(self.limits, size))
        try:
            ex = self.box.extract(path, name, spool)
        except ExtractError as exc:
            return Extraction(name, ResultStatus.failed, error=storable(str(exc)))
        children: list[Extraction] = []
        if ex.kind in registry.CONTAINERS:
            self._add(ex.attachments, name, None, 1, children, spool, archive=name)
            return Extraction(name, ResultStatus.succeeded, children=children, replaced=True)
        out = output_of(ex, size, sha256)
        text = self._spool_text(ex.text)
        library = ex.library
        self._add(ex.attachments, name, -1, 1, children, spool, archive=None)
        out["attachments"] = [c.name for c in children if c.parent == -1]
        return Extraction(
            name,
            ResultStatus.succeeded,
            output=out,
            library=storable(library),
            text_file=text,
            children=children,
        )

    def _add(
        self,
        found: list[Attachment],
        prefix: str,
        parent: int | None,
        depth: int,
        out: list[Extraction],
        spool: Spool,
        archive: str | None,
    ) -> None:
        for att in found:
            if self.should_stop():
                raise Stopped
            name = _child_name(prefix, att.name)
            if att.path is None:  # a member the archive reader would not read
                out.append(
                    Extraction(
                        name, ResultStatus.failed, error=storable(att.error or ""), parent=parent
                    )
                )
                continue
            if depth > self.max_depth:
                out.append(
                    Extraction(
                        name,
                        ResultStatus.failed,
                        error=f"nested more than {self.max_depth} levels deep "
                        "(DOCBATCH_EXTRACT_MAX_DEPTH)",
                        original=att.path,
                        parent=parent,
                    )
                )
                continue
            try:
                ex = self.box.extract(att.path, name, spool)
            except ExtractError as exc:
                out.append(
                    Extraction(
                        name,
                        ResultStatus.failed,
                        error=storable(str(exc)),
                        original=att.path,
                        parent=parent,
                    )
                )
                continue
            if ex.kind in registry.CONTAINERS:  # its files belong where the archive was
                # The archive's own bytes are not kept (its files are): off the disk now.
                self._add(ex.attachments, name, parent, depth + 1, out, spool, archive=name)
                att.path.unlink(missing_ok=True)
                continue
            size, sha256 = file_digest(att.path)
            output = output_of(ex, size, sha256)
            output["parent"] = prefix if parent is not None else None
            if archive:
                output["archive"] = archive
            out.append(
                Extraction(
                    name,
                    ResultStatus.succeeded,
                    output=output,
                    library=storable(ex.library),
                    text_file=self._spool_text(ex.text),
                    original=att.path,
                    parent=parent,
                )
            )
            self._add(ex.attachments, name, len(out) - 1, depth + 1, out, spool, archive=None)


def too_big(f: DocumentFile, settings: Settings) -> str:
    return (
        f"the file is {f.bytes:,} bytes; the limit is {settings.extract_max_bytes:,} "
        "(DOCBATCH_EXTRACT_MAX_BYTES)"
    )
