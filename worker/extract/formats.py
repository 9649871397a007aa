"""One entry point: bytes in, ``Extracted`` out, the format found from the content."""

from __future__ import annotations

from docbatch.worker.extract import detect as kinds
from docbatch.worker.extract.base import Attachment, Extracted, ExtractError, Limits


def extract(data: bytes, name: str, limits: Limits) -> Extracted:
    """Text, page map, sections and attachments of one file; ExtractError says why not.

    An archive comes back with no text and its members as ``attachments``.
    """
    if not data:
        raise ExtractError("the file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ExtractError(
            f"the file is {len(data):,} bytes; the limit is {limits.max_bytes:,} "
            "(DOCBATCH_EXTRACT_MAX_BYTES)"
        )
    kind = kinds.detect(data, name)
    if kind is None:
        raise ExtractError(
            f"unsupported file type ({data[:8]!r}...): docbatch reads PDF, DOCX, HTML, "
            "e-mail (.eml, .msg), text and Markdown, zip and tar archives, and images with OCR"
        )
    result = _by_kind(kind, data, limits)
    if len(result.text) > limits.max_text_chars:
        raise ExtractError(
            f"the extracted text is {len(result.text):,} characters; the limit is "
            f"{limits.max_text_chars:,} (DOCBATCH_EXTRACT_MAX_TEXT_CHARS)"
        )
    return result


def _by_kind(kind: str, data: bytes, limits: Limits) -> Extracted:
    if kind == kinds.PDF:
        from docbatch.worker.extract.pdf import extract_pdf

        return extract_pdf(data, limits)
    if kind == kinds.IMAGE:
        from docbatch.worker.extract.pdf import extract_image

        return extract_image(data, limits)
    if kind == kinds.DOCX:
        from docbatch.worker.extract.office import extract_docx

        return extract_docx(data)
    if kind == kinds.HTML:
        from docbatch.worker.extract.web import extract_html

        return extract_html(data)
    if kind == kinds.EMAIL:
        from docbatch.worker.extract.mail import extract_eml

        return extract_eml(data)
    if kind == kinds.MSG:
        from docbatch.worker.extract.mail import extract_msg

        return extract_msg(data)
    if kind in (kinds.ZIP, kinds.TAR):
        from docbatch.worker.extract.archive import unpack

        members: list[Attachment] = unpack(data, kind, limits)
        return Extracted("", kind, "python zipfile/tarfile (stdlib)", attachments=members)
    from docbatch.worker.extract.text import extract_text

    return extract_text(data, kind)
