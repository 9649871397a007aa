"""One entry point: a file in, ``Extracted`` out, the format found from the content."""

from __future__ import annotations

from pathlib import Path

from docbatch.worker.extract import registry
from docbatch.worker.extract.base import Extracted, ExtractError, Limits, Source, Spool
from docbatch.worker.extract.detect import HEAD

# A file up to this size is read once, whole (every extractor but the PDF's reads it
# whole anyway); a bigger one is opened for its head and left to its extractor.
SMALL = 4 << 20


def extract(file: bytes | Path, name: str, limits: Limits, spool: Spool | None = None) -> Extracted:
    """Text, page map, sections and attachments of one file; ExtractError says why not.

    ``file`` is the bytes or a path to them. An archive comes back with no text and its
    members as ``attachments``, written to ``spool`` (by default a new temporary
    directory, the caller's to remove) within its budget.
    """
    if isinstance(file, bytes):
        source = Source(name, "", limits, spool, _data=file)
    else:
        source = Source(name, "", limits, spool, path=file)
    size = source.size
    if not size:
        raise ExtractError("the file is empty (0 bytes)")
    if size > limits.max_bytes:
        raise ExtractError(
            f"the file is {size:,} bytes; the limit is {limits.max_bytes:,} "
            "(DOCBATCH_EXTRACT_MAX_BYTES)"
        )
    if source.path is not None and size <= SMALL:
        source = Source(name, "", limits, spool, path=source.path, _data=source.data)
    with source.open() as fh:
        head = fh.read(HEAD)
    fmt = registry.detect_format(head, name, source.open)
    if fmt is None:
        raise ExtractError(f"unsupported file type ({head[:8]!r}...): {registry.reads()}")
    source.kind = fmt.kind
    result = fmt.load()(source)
    if len(result.text) > limits.max_text_chars:
        raise ExtractError(
            f"the extracted text is {len(result.text):,} characters; the limit is "
            f"{limits.max_text_chars:,} (DOCBATCH_EXTRACT_MAX_TEXT_CHARS)"
        )
    return result
