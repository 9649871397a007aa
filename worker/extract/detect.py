"""The rules that tell a file's format from its bytes (its name only breaks ties, e.g.
Markdown). ``registry.FORMATS`` names one rule per format and tries them in order:
containers first, so a zip or tar whose first member is a PDF is read as the archive it
is, never as the PDF whose ``%PDF-`` shows in its first KiB."""

from __future__ import annotations

import functools
import re
import tarfile
import zipfile
from collections.abc import Callable
from typing import IO

HEAD = 4096
_HTML = re.compile(rb"<(!doctype\s+html|html[\s>]|head[\s>]|body[\s>]|meta\s|title>)", re.I)
_HEADER = re.compile(rb"^[A-Za-z][A-Za-z0-9-]{1,40}:[ \t]?\S", re.M)
_MAIL_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"received",
    b"message-id",
    b"mime-version",
    b"return-path",
    b"delivered-to",
    b"cc",
)
GZIP, XZ = b"\x1f\x8b", b"\xfd7zXZ\x00"
# "BZh", the block size, then a block's magic (pi) or the end of an empty stream (sqrt pi).
_BZIP2 = re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)")


class Probe:
    """What the rules look at: the first 4 KiB, the name, and (for a zip) its names."""

    def __init__(self, head: bytes, name: str, opener: Callable[[], IO[bytes]]) -> None:
        self.head = head
        self.name = name
        self._open = opener

    @functools.cached_property
    def zip_names(self) -> frozenset[str] | None:
        """The names in a zip's central directory; None: not a readable zip."""
        try:
            with self._open() as fh, zipfile.ZipFile(fh) as archive:
                return frozenset(archive.namelist())
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return None

    @functools.cached_property
    def textual(self) -> bool:
        """No NUL in the head (UTF-16 with a BOM aside): text, not a binary format."""
        return b"\x00" not in self.head or self.head.startswith((b"\xff\xfe", b"\xfe\xff"))

    @functools.cached_property
    def stripped(self) -> bytes:
        return self.head.lstrip(b"\xef\xbb\xbf \t\r\n")


Rule = Callable[[Probe], bool]


def starts_with(*magic: bytes) -> Rule:
    return lambda p: p.head.startswith(magic)


def is_zip(p: Probe) -> bool:
    return p.head.startswith(b"PK\x03\x04") and p.zip_names is not None


def is_docx(p: Probe) -> bool:
    return is_zip(p) and "word/document.xml" in (p.zip_names or ())


def is_tar(p: Probe) -> bool:
    """A tar (its first header is valid), or a gzip/bzip2/xz stream (a compressed tar or
    one compressed file: the archive extractor tells which)."""
    if p.head.startswith((GZIP, XZ)) or _BZIP2.match(p.head):
        return True
    return is_tar_header(p.head[:512])


def is_tar_header(block: bytes) -> bool:
    if len(block) < 512 or not any(block):
        return False
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "replace")
    except tarfile.HeaderError:
        return False
    return True


def is_pdf(p: Probe) -> bool:
    # Readers accept up to 1 KiB of junk before the header, so do we.
    return p.head.startswith(b"%PDF-") or b"%PDF-" in p.head[:1024]


def is_email(p: Probe) -> bool:
    if not p.textual:
        return False
    block = p.stripped.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = [ln for ln in block.splitlines() if ln and not ln[:1].isspace()]
    if len(lines) < 2 or not all(_HEADER.match(ln) for ln in lines):
        return False
    keys = {ln.split(b":", 1)[0].lower() for ln in lines}
    return len(keys & set(_MAIL_HEADERS)) >= 2


def is_html(p: Probe) -> bool:
    return p.textual and bool(_HTML.search(p.stripped[:1024]))


def named(*suffixes: str) -> Rule:
    return lambda p: p.textual and p.name.lower().endswith(suffixes)


def is_text(p: Probe) -> bool:
    return p.textual
