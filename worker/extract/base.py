"""What every extractor is given and returns, the limits it obeys, and the error it raises.

An extractor reads a ``Source`` (the file's bytes, from disk or memory, its name and
kind, the limits) and returns an ``Extracted``. Files found inside it (archive members,
e-mail attachments) go to the source's ``Spool``: written to disk one at a time, each
charged to the ``Budget`` of the whole upload, so nested archives share one budget and
nothing found inside a file is ever held whole in memory.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from docbatch.schema.errors import PermanentError

CHUNK = 1 << 16


class ExtractError(PermanentError):
    """This file cannot be turned into text; the message says why and what to change."""


@dataclass(frozen=True)
class Limits:
    """Per-document extraction limits (settings ``DOCBATCH_EXTRACT_*``)."""

    max_pages: int = 2000
    max_bytes: int = 100_000_000
    max_text_chars: int = 10_000_000
    archive_max_files: int = 10_000
    archive_max_total_bytes: int = 1_000_000_000
    archive_max_ratio: float = 100.0
    ocr: bool = False
    ocr_languages: str = "eng"
    time_limit_seconds: float = 60.0
    # The sandbox child's address space (RLIMIT_AS); 0: no limit.
    max_memory_bytes: int = 2_147_483_648


@dataclass
class Budget:
    """What the expansion of one upload may still unpack, shared by every archive and
    attachment inside it (nested ones included): ``files`` more files and ``bytes`` more
    bytes, the smaller of DOCBATCH_EXTRACT_ARCHIVE_MAX_TOTAL_BYTES and MAX_RATIO times the
    upload's own size. What breaks it fails the file being unpacked, with the limit named.

    Example::

        budget = Budget.for_upload(Limits(), 952)   # a 952-byte zip may unpack 95,200 bytes
        budget.take_file(); budget.take_bytes(40_000)
    """

    files: int
    bytes: int
    by_ratio: bool  # the ratio, not the total, sets ``bytes`` (it names the limit)
    limits: Limits
    upload_bytes: int

    @classmethod
    def for_upload(cls, limits: Limits, upload_bytes: int) -> Budget:
        by_ratio_cap = int(limits.archive_max_ratio * max(upload_bytes, 1))
        by_ratio = by_ratio_cap < limits.archive_max_total_bytes
        return cls(
            files=limits.archive_max_files,
            bytes=min(by_ratio_cap, limits.archive_max_total_bytes),
            by_ratio=by_ratio,
            limits=limits,
            upload_bytes=upload_bytes,
        )

    def too_many_files(self) -> ExtractError:
        n = self.limits.archive_max_files
        return ExtractError(
            f"the upload holds more than {n:,} files (archive members and attachments, "
            f"nested ones included); the limit is {n:,} (DOCBATCH_EXTRACT_ARCHIVE_MAX_FILES)"
        )

    def too_many_bytes(self) -> ExtractError:
        if self.by_ratio:
            ratio = self.limits.archive_max_ratio
            return ExtractError(
                f"the upload unpacks to more than {ratio:,.0f} times its {self.upload_bytes:,} "
                f"bytes (a zip bomb?); the limit is {ratio:,.0f} "
                "(DOCBATCH_EXTRACT_ARCHIVE_MAX_RATIO)"
            )
        total = self.limits.archive_max_total_bytes
        return ExtractError(
            f"the upload unpacks to more than {total:,} bytes (archives and attachments, "
            f"nested ones included); the limit is {total:,} "
            "(DOCBATCH_EXTRACT_ARCHIVE_MAX_TOTAL_BYTES)"
        )

    def check(self, files: int = 0, nbytes: int = 0) -> None:
        """Raise if ``files`` more files or ``nbytes`` more bytes would not fit."""
        if files > self.files:
            raise self.too_many_files()
        if nbytes > self.bytes:
            raise self.too_many_bytes()

    def take_file(self) -> None:
        self.check(files=1)
        self.files -= 1

    def take_bytes(self, n: int) -> None:
        self.check(nbytes=n)
        self.bytes -= n

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "by_ratio": self.by_ratio,
            "upload_bytes": self.upload_bytes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], limits: Limits) -> Budget:
        return cls(
            files=int(d["files"]),
            bytes=int(d["bytes"]),
            by_ratio=bool(d["by_ratio"]),
            limits=limits,
            upload_bytes=int(d["upload_bytes"]),
        )


@dataclass
class Attachment:
    """A file found inside another (an e-mail attachment, an archive member): its bytes
    spooled to ``path``, or, with ``error``, a member that is not read (a link, an
    encrypted member) and becomes a failed document saying why."""

    name: str
    path: Path | None
    size: int = 0
    error: str | None = None

    def read_bytes(self) -> bytes:
        return self.path.read_bytes() if self.path is not None else b""


class Spool:
    """A directory for the files found inside an upload, and the upload's ``Budget``."""

    def __init__(self, directory: Path, budget: Budget) -> None:
        self.directory = directory
        self.budget = budget

    @classmethod
    def temporary(cls, limits: Limits, upload_bytes: int) -> Spool:
        """A fresh directory under the system's temp (the caller removes it)."""
        return cls(
            Path(tempfile.mkdtemp(prefix="docbatch-spool-")),
            Budget.for_upload(limits, upload_bytes),
        )

    def add(self, name: str, source: IO[bytes] | bytes, declared: int | None = None) -> Attachment:
        """Copy ``source`` to a new file here, charging the budget: a declared size is
        checked before a byte is read, the running size while copying (a header can lie)."""
        self.budget.take_file()
        if declared is not None:
            self.budget.check(nbytes=declared)
        reader: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else source
        fd, name_on_disk = tempfile.mkstemp(dir=self.directory, suffix=".bin")
        path = Path(name_on_disk)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                # One byte past the budget says it was broken, without reading further.
                while chunk := reader.read(min(CHUNK, self.budget.bytes - size + 1)):
                    size += len(chunk)
                    if size > self.budget.bytes:
                        raise self.budget.too_many_bytes()
                    out.write(chunk)
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self.budget.bytes -= size
        return Attachment(name, path, size)

    def refuse(self, name: str, reason: str) -> Attachment:
        """A member that is not read: it still becomes a document, failed with ``reason``."""
        self.budget.take_file()
        return Attachment(name, None, 0, error=reason)


@dataclass
class Source:
    """One file to extract: on disk (``path``) or in memory (``data``)."""

    name: str
    kind: str
    limits: Limits
    spool: Spool | None
    path: Path | None = None
    _data: bytes | None = None

    @functools.cached_property
    def data(self) -> bytes:
        if self._data is not None:
            return self._data
        assert self.path is not None
        return self.path.read_bytes()

    @property
    def size(self) -> int:
        if self._data is not None:
            return len(self._data)
        assert self.path is not None
        return self.path.stat().st_size

    def open(self) -> IO[bytes]:
        if self._data is not None or self.path is None:
            return io.BytesIO(self.data)
        return self.path.open("rb")

    def members(self) -> Spool:
        """Where the files inside this one go (a temporary spool if none was given)."""
        if self.spool is None:
            self.spool = Spool.temporary(self.limits, self.size)
        return self.spool


@dataclass
class Extracted:
    text: str
    kind: str
    library: str
    # (offset where the page starts in ``text``, 1-based page number), ascending.
    pages: list[tuple[int, int]] = field(default_factory=list)
    # (offset where the section starts, its heading or part name), ascending.
    sections: list[tuple[int, str]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)

    def page_at(self, offset: int) -> int | None:
        """The page holding character ``offset`` of the text (None: no page map)."""
        return _lookup(self.pages, offset)

    def section_at(self, offset: int) -> str | None:
        return _lookup(self.sections, offset)


def _lookup(starts: list[tuple[int, Any]], offset: int) -> Any:
    if not starts:
        return None
    i = bisect.bisect_right([s for s, _ in starts], offset) - 1
    return starts[max(i, 0)][1]


@functools.cache
def version_of(package: str) -> str:
    """``"name version"`` of an installed package (read once: the lookup is slow)."""
    from importlib.metadata import version

    return f"{package} {version(package)}"
