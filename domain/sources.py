"""Where a scheduled job's documents come from.

A source is anything with ``iter_documents()`` yielding ``({"custom_id", "text",
"metadata"?}, line or None)`` or ``(FileDocument, None)``, the shapes
``docbatch.domain.jobs.create_job`` takes. It is
stored on the schedule as a JSON spec with a ``type``; ``parse_source`` validates a
spec (errors name the field) and ``open_source`` builds the reader. The first kind
is a folder; an object store (``{"type": "s3", "bucket", "prefix"}``) is another
class with the same method and one more branch in ``parse_source``.

Folders are confined: tenant ``T`` reads only below ``<root>/T`` for a root in
DOCBATCH_SCHEDULE_FOLDER_ROOTS, and with no root configured there are no folder
schedules. The check is made on the real path (symlinks followed) of the folder and of
every file, each time a schedule fires, because a folder that was fine at creation can
be swapped for a symlink later; a file's size is checked (fstat) before it is read.
Example::

    limits = FileLimits(
        settings.max_document_bytes, settings.max_request_bytes, settings.extract_max_bytes
    )
    source = open_source(spec, "acme", settings.schedule_folder_roots, limits)
    for document, line in source.iter_documents():
        ...
"""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from docbatch.domain.files import JSONL_SUFFIXES, TEXT_SUFFIXES, FileDocument, inline_text
from docbatch.schema.errors import InputError, PermanentError

SOURCE_TYPES = ("folder",)
ROOTS_SETTING = "DOCBATCH_SCHEDULE_FOLDER_ROOTS"


class Source(Protocol):
    fingerprints: dict[str, str]
    skipped: int

    def iter_documents(
        self, skip: dict[str, str] | None = None
    ) -> Iterator[tuple[dict[str, Any] | FileDocument, int | None]]:
        """Documents in a stable order; raise PermanentError when the source is unreadable.
        ``skip``: name -> fingerprint of files to leave out when unchanged."""
        ...


def tenant_roots(roots: Sequence[str], tenant: str) -> list[Path]:
    """The folders ``tenant`` may read: ``<root>/<tenant>`` for each configured root, as
    real paths (a root or tenant folder that is a link, an operator's mount, is followed;
    links below it are not trusted)."""
    # Tenant names are [A-Za-z0-9][A-Za-z0-9_.-]* (domain/tenants.py): one safe path component.
    return [Path(os.path.realpath(Path(root) / tenant)) for root in roots]


def _inside(real: Path, allowed: Sequence[Path]) -> bool:
    return any(real == root or real.is_relative_to(root) for root in allowed)


@dataclass(frozen=True)
class FileLimits:
    """Largest file read: a UTF-8 text file taken as it is (DOCBATCH_MAX_DOCUMENT_BYTES);
    a JSONL file is like an NDJSON upload (DOCBATCH_MAX_REQUEST_BYTES); any other file is
    stored for extraction up to DOCBATCH_EXTRACT_MAX_BYTES (a bigger one fails alone)."""

    text_bytes: int
    jsonl_bytes: int
    file_bytes: int = 100_000_000


class FolderSource:
    """Files under ``path`` matching ``pattern`` (hidden ones skipped), each one document
    named by its path relative to the folder: a UTF-8 ``.txt``/``.md`` as its text, any
    other file (PDF, DOCX, HTML, e-mail, archive, text in another encoding) stored for the
    extract stage; ``.jsonl`` lines are documents as they are (their own ``custom_id``).
    Every file must really lie inside ``allowed``."""

    def __init__(
        self, path: str, pattern: str, allowed: Sequence[Path], limits: FileLimits
    ) -> None:
        self.root = Path(path)
        self.pattern = pattern
        self.allowed = list(allowed)
        self.limits = limits

    def real_root(self) -> Path:
        real = Path(os.path.realpath(self.root))
        if not _inside(real, self.allowed):
            raise PermanentError(
                f"source folder {self.root} leads outside the folders this tenant may read "
                f"(<root>/<tenant> for each root in {ROOTS_SETTING}); refused"
            )
        if not real.is_dir():
            raise PermanentError(f"source folder {self.root} does not exist or is not a folder")
        return real

    def files(self) -> list[tuple[Path, str]]:
        """(path, name relative to the folder) of the matching files, sorted by name.

        Anything that is not a folder or hidden (``.name``, or inside ``.folder/``) is
        listed, so a file that cannot be read (a dangling link, a FIFO) is reported rather
        than silently skipped.
        """
        root = self.real_root()
        found = []
        try:
            for path in root.glob(self.pattern):
                # A pattern through a linked folder stops at its first match outside,
                # rather than listing a whole foreign tree before the reads refuse it.
                if not _inside(Path(os.path.realpath(path.parent)), self.allowed):
                    raise PermanentError(
                        f"{path.relative_to(root).parent.as_posix()}/ leads outside the "
                        "folders this tenant may read (<root>/<tenant> for each root in "
                        f"{ROOTS_SETTING}); refused"
                    )
                hidden = any(p.startswith(".") for p in path.relative_to(root).parts)
                if not hidden and not path.is_dir():
                    found.append(path)
        except OSError as exc:
            raise PermanentError(f"cannot list {self.root}: {exc.strerror or exc}") from None
        return sorted((p, p.relative_to(root).as_posix()) for p in found)

    def iter_documents(
        self, skip: dict[str, str] | None = None
    ) -> Iterator[tuple[dict[str, Any] | FileDocument, int | None]]:
        """The documents of every file; with ``skip`` (name -> fingerprint of a file already
        taken), only files new or changed since. ``fingerprints`` collects what was read,
        ``skipped`` counts the files left out."""
        self.fingerprints: dict[str, str] = {}
        self.skipped = 0
        for path, name in self.files():
            mark = fingerprint(path)
            if skip is not None and mark is not None and skip.get(name) == mark:
                self.skipped += 1
                continue
            if mark is not None:
                self.fingerprints[name] = mark
            yield from self._read(path, name)

    def _read(
        self, path: Path, name: str
    ) -> Iterator[tuple[dict[str, Any] | FileDocument, int | None]]:
        jsonl = path.suffix in JSONL_SUFFIXES
        limit = self.limits.jsonl_bytes if jsonl else None
        try:
            fh = open_confined(path, name, self.allowed, limit, "DOCBATCH_MAX_REQUEST_BYTES")
        except OSError as exc:
            raise PermanentError(f"cannot read {name}: {exc.strerror or exc}") from None
        with fh:
            try:
                if jsonl:
                    yield from _jsonl_documents(fh, name)
                    return
                size = os.fstat(fh.fileno()).st_size
                if path.suffix in TEXT_SUFFIXES and size <= self.limits.text_bytes:
                    text = inline_text(name, fh.read(size + 1), self.limits.text_bytes)
                    if text is not None:
                        yield {"custom_id": name, "text": text}, None
                        return
                    fh.seek(0)
            except OSError as exc:
                raise PermanentError(f"cannot read {name}: {exc.strerror or exc}") from None
            # Opened (and checked) already: the job reads these very bytes, or none at all
            # when the file is over the extraction limit.
            yield FileDocument(name, size, _keep_open(fh)), None


def fingerprint(path: Path) -> str | None:
    """``size:mtime_ns`` of a file (what rsync and make compare); None if it cannot be
    stat'ed (reading it then reports why)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return f"{info.st_size}:{info.st_mtime_ns}"


def _keep_open(fh: io.BufferedReader) -> Callable[[], IO[bytes]]:
    return lambda: fh


def open_confined(
    path: Path, name: str, allowed: Sequence[Path], limit: int | None, setting: str
) -> io.BufferedReader:
    """Open ``path`` for reading if its real path lies inside ``allowed``, it is a regular
    file, and it is at most ``limit`` bytes (None: any size); PermanentError naming the
    file otherwise.

    The final component is opened with O_NOFOLLOW at its resolved path, and the opened
    descriptor's own path is checked again, so a link swapped in between is refused.
    """
    outside = PermanentError(
        f"{name} leads outside the folders this tenant may read "
        f"(<root>/<tenant> for each root in {ROOTS_SETTING}); refused"
    )
    real = Path(os.path.realpath(path, strict=True))
    if not _inside(real, allowed):
        raise outside
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(real, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PermanentError(f"{name} is not a regular file; refused")
        proc_link = f"/proc/self/fd/{fd}"
        if os.path.exists(proc_link) and not _inside(Path(os.readlink(proc_link)), allowed):
            raise outside
        if limit is not None and info.st_size > limit:
            raise PermanentError(
                f"{name} is {info.st_size} bytes; the limit is {limit} bytes ({setting})"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _jsonl_documents(
    fh: io.BufferedReader, name: str
) -> Iterator[tuple[dict[str, Any], int | None]]:
    for number, raw in enumerate(fh, start=1):
        if not raw.strip():
            continue
        try:
            yield json.loads(raw), number
        except ValueError as exc:
            raise InputError("document", f"{name}: malformed JSON: {exc}", line=number) from None


def parse_source(raw: Any, allowed_roots: Sequence[str], tenant: str) -> dict[str, Any]:
    """Validate a source spec for ``tenant``; returns it normalised. A folder must lie
    below ``<root>/<tenant>`` for a root in ``allowed_roots``
    (DOCBATCH_SCHEDULE_FOLDER_ROOTS); with none configured, folder sources are refused."""
    if not isinstance(raw, dict):
        raise InputError("source", 'must be an object, e.g. {"type": "folder", "path": "/data"}')
    kind = raw.get("type", "folder")
    if kind not in SOURCE_TYPES:
        raise InputError(
            "source.type", f"unknown source {kind!r}; known: {', '.join(SOURCE_TYPES)}"
        )
    unknown = sorted(set(raw) - {"type", "path", "pattern"})
    if unknown:
        raise InputError(f"source.{unknown[0]}", "unknown field; expected type, path, pattern")
    if not allowed_roots:
        raise InputError(
            "source",
            f"folder schedules are off on this server: no {ROOTS_SETTING} is set "
            '(an operator sets e.g. ["/data/inbox"]; tenant T then reads below /data/inbox/T)',
        )
    path = raw.get("path")
    if not isinstance(path, str) or not path.strip():
        raise InputError("source.path", "is required: the folder to read")
    if not Path(path).is_absolute():
        raise InputError("source.path", f"must be an absolute path, got {path!r}")
    pattern = raw.get("pattern", "**/*")
    if not isinstance(pattern, str) or not pattern or pattern.startswith("/") or ".." in pattern:
        raise InputError("source.pattern", "must be a relative glob such as '**/*' or '*.md'")
    resolved = Path(os.path.realpath(path))
    allowed = tenant_roots(allowed_roots, tenant)
    if not _inside(resolved, allowed):
        raise InputError(
            "source.path",
            f"{path} is outside the folders this tenant may read: "
            f"{', '.join(str(r) for r in allowed)} ({ROOTS_SETTING}/<tenant>)",
        )
    return {"type": kind, "path": str(resolved), "pattern": pattern}


def open_source(
    spec: dict[str, Any], tenant: str, roots: Sequence[str], limits: FileLimits
) -> Source:
    """The reader for a stored spec, confined to ``tenant``'s folders under ``roots``
    (checked again here: the roots may have changed since the schedule was made)."""
    if spec.get("type", "folder") == "folder":
        if not roots:
            raise PermanentError(
                f"folder schedules are off on this server: no {ROOTS_SETTING} is set"
            )
        return FolderSource(
            spec["path"], spec.get("pattern", "**/*"), tenant_roots(roots, tenant), limits
        )
    raise PermanentError(f"unknown source type {spec.get('type')!r}")
