"""The format of a file from its bytes (its name only breaks ties, e.g. Markdown)."""

from __future__ import annotations

import io
import re
import zipfile

PDF, DOCX, HTML, EMAIL, MSG, TEXT, MARKDOWN, ZIP, TAR, IMAGE = (
    "pdf",
    "docx",
    "html",
    "email",
    "msg",
    "text",
    "markdown",
    "zip",
    "tar",
    "image",
)
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


def detect(data: bytes, name: str = "") -> str | None:
    """One of the kinds above, or None for a binary format we don't read."""
    head = data[:4096]
    if head.startswith(b"%PDF-") or b"%PDF-" in head[:1024]:
        return PDF
    if head.startswith(b"PK\x03\x04"):
        try:
            names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
        except zipfile.BadZipFile:
            return None
        return DOCX if "word/document.xml" in names else ZIP
    if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
        return TAR
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return MSG
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")):
        return IMAGE
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if _looks_like_email(stripped):
        return EMAIL
    if _HTML.search(stripped[:1024]):
        return HTML
    if name.lower().endswith((".md", ".markdown")):
        return MARKDOWN
    return TEXT


def _looks_like_email(head: bytes) -> bool:
    block = head.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = [ln for ln in block.splitlines() if ln and not ln[:1].isspace()]
    if len(lines) < 2 or not all(_HEADER.match(ln) for ln in lines):
        return False
    keys = {ln.split(b":", 1)[0].lower() for ln in lines}
    return len(keys & set(_MAIL_HEADERS)) >= 2
