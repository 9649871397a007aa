"""PDF: the text layer page by page (pypdfium2), OCR for pages without one when enabled.

pypdfium2 (Apache-2.0/BSD) wraps PDFium, Chrome's PDF engine: fast, well kept, and it
renders pages for OCR too, so one library serves both paths.
"""

from __future__ import annotations

import pypdfium2 as pdfium

from docbatch.worker.extract.base import Extracted, ExtractError, Limits, Source, version_of


def extract_pdf(source: Source) -> Extracted:

    limits = source.limits
    try:
        # From the path, PDFium reads the file as it needs it (bytes stay in memory whole).
        pdf = pdfium.PdfDocument(source.path if source.path is not None else source.data)
    except pdfium.PdfiumError as exc:
        reason = str(exc)
        if "password" in reason.lower():
            raise ExtractError("the PDF is encrypted (a password is needed)") from None
        raise ExtractError(f"the PDF is damaged or not a PDF ({reason})") from None
    try:
        count = len(pdf)
        if count > limits.max_pages:
            raise ExtractError(
                f"the PDF has {count} pages; the limit is {limits.max_pages} "
                "(DOCBATCH_EXTRACT_MAX_PAGES)"
            )
        parts: list[str] = []
        pages: list[tuple[int, int]] = []
        offset = 0
        ocr_pages = 0
        for number in range(count):
            page = pdf[number]
            textpage = page.get_textpage()
            text = textpage.get_text_range().replace("\r\n", "\n").replace("\r", "\n")
            textpage.close()
            if not text.strip() and limits.ocr:
                text = _ocr_page(page, limits)
                ocr_pages += 1
            page.close()
            text = text.strip("\n")
            if parts:
                parts.append("\n\n")
                offset += 2
            pages.append((offset, number + 1))
            parts.append(text)
            offset += len(text)
    finally:
        pdf.close()
    full = "".join(parts)
    if not full.strip():
        hint = "" if limits.ocr else "; enable OCR with DOCBATCH_EXTRACT_OCR=true"
        raise ExtractError(f"the PDF has no text layer (a scan?){hint}")
    library = version_of("pypdfium2") + (f" + {_tesseract()}" if ocr_pages else "")
    return Extracted(
        full, "pdf", library, pages=pages, metadata={"pages": count, "ocr_pages": ocr_pages}
    )


def _ocr_page(page: object, limits: Limits) -> str:
    import pytesseract

    image = page.render(scale=300 / 72).to_pil()  # type: ignore[attr-defined]
    return str(pytesseract.image_to_string(image, lang=limits.ocr_languages))


def _tesseract() -> str:
    import pytesseract

    return f"tesseract {pytesseract.get_tesseract_version()}"


def extract_image(source: Source) -> Extracted:
    limits = source.limits
    if not limits.ocr:
        raise ExtractError(
            "an image holds no text layer; enable OCR with DOCBATCH_EXTRACT_OCR=true"
        )
    import io

    import pytesseract
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(source.data))
    except Exception as exc:  # PIL raises many kinds for a bad image
        raise ExtractError(f"the image cannot be read ({exc})") from None
    text = str(pytesseract.image_to_string(image, lang=limits.ocr_languages)).strip()
    if not text:
        raise ExtractError("OCR found no text in the image")
    return Extracted(text, "image", _tesseract(), pages=[(0, 1)])
