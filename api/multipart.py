"""A multipart/form-data job: many ``file`` parts (NDJSON files of documents, or files such
as PDFs, Word files, web pages, e-mails, archives) and the job options as text fields.

The raw body is spooled to disk while it arrives (bounded by DOCBATCH_MAX_REQUEST_BYTES),
then read twice in the submit thread: once for the text fields and the digest that
Idempotency-Key compares (over the parts' names, file names and bytes, not the random
boundary), once to hand each part to the job as it is written. One part at a time is
held, in a temporary file of its own, so ten thousand files never mean ten thousand
open files or their bytes in memory.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from docbatch.schema.errors import InputError

BLOCK = 1 << 20
PART_MEMORY = 1 << 20  # a part's bytes stay in memory up to this, then go to disk
MAX_FIELD_BYTES = 1 << 20
MAX_HEADER_COUNT = 16


@dataclass
class Part:
    """One part: its form field name, its file name (None for a text field), its
    Content-Type, and (when read for the job) its bytes in ``data``."""

    name: str
    filename: str | None
    content_type: str
    size: int = 0
    data: IO[bytes] | None = None
    text: bytes = b""
    _headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def boundary_of(content_type: str) -> bytes:
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InputError("body", "malformed multipart/form-data: no boundary in Content-Type")
    return boundary


def _disposition(value: bytes) -> tuple[str, str | None]:
    _, options = parse_options_header(value)
    name = options.get(b"name", b"").decode("utf-8", errors="replace")
    filename = options.get(b"filename")
    return name, (filename.decode("utf-8", errors="replace") if filename is not None else None)


def iter_parts(spool: IO[bytes], boundary: bytes, *, keep_files: bool) -> Iterator[Part]:
    """The body's parts in order. Text fields carry their value in ``text``; file parts
    carry their bytes in ``data`` (a temporary file the caller closes) when
    ``keep_files``, else only their ``size`` and a sha256 in ``text``."""
    ready: deque[Part] = deque()
    current: list[Part] = []
    header: dict[str, bytes] = {"field": b"", "value": b""}
    digest: list[Any] = []

    def on_part_begin() -> None:
        current[:] = [Part("", None, "")]

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        current[0]._headers.append((header["field"].lower(), header["value"]))
        header["field"], header["value"] = b"", b""

    def on_headers_finished() -> None:
        part = current[0]
        for key, value in part._headers:
            if key == b"content-disposition":
                part.name, part.filename = _disposition(value)
            elif key == b"content-type":
                part.content_type = value.decode("latin-1").strip()
        if part.filename is not None:
            if keep_files:
                part.data = tempfile.SpooledTemporaryFile(max_size=PART_MEMORY)  # noqa: SIM115
            else:
                digest[:] = [hashlib.sha256()]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = current[0]
        chunk = data[start:end]
        part.size += len(chunk)
        if part.filename is None:
            if part.size > MAX_FIELD_BYTES:
                raise InputError(part.name or "body", f"form field is over {MAX_FIELD_BYTES} bytes")
            part.text += chunk
        elif part.data is not None:
            part.data.write(chunk)
        else:
            digest[0].update(chunk)

    def on_part_end() -> None:
        part = current[0]
        if part.data is not None:
            part.data.seek(0)
        elif part.filename is not None:
            part.text = digest[0].hexdigest().encode()
        ready.append(part)

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
        },
        max_header_count=MAX_HEADER_COUNT,
    )
    spool.seek(0)
    try:
        while block := spool.read(BLOCK):
            try:
                parser.write(block)
            except FormParserError as exc:
                raise InputError("body", f"malformed multipart/form-data: {exc}") from None
            while ready:
                yield ready.popleft()
        parser.finalize()
    except BaseException:
        for part in list(ready) + current:
            if part.data is not None:
                part.data.close()
        raise
    yield from ready


def fields_and_digest(spool: IO[bytes], boundary: bytes) -> tuple[dict[str, str], str, int]:
    """The text fields (the last value of each), a digest of every part's name, file name
    and bytes, and how many ``file`` parts there are (first pass; no file bytes are kept).
    A file part under another name is a 422 naming ``file``."""
    fields: dict[str, str] = {}
    digest = hashlib.sha256()
    files = 0
    for part in iter_parts(spool, boundary, keep_files=False):
        digest.update(repr((part.name, part.filename, part.text)).encode())
        if part.filename is None:
            try:
                fields[part.name] = part.text.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(part.name, "form field is not valid UTF-8") from None
        elif part.name != "file":
            raise InputError(
                "file", f"unknown file field {part.name!r}; documents go in 'file' parts"
            )
        else:
            files += 1
    return fields, digest.hexdigest(), files
