"""DOCX (python-docx, MIT): paragraphs and tables in body order, headings as sections."""

from __future__ import annotations

import io

import docx
from docx.table import Table
from docx.text.paragraph import Paragraph

from docbatch.worker.extract.base import Extracted, ExtractError, Source, version_of


def extract_docx(source: Source) -> Extracted:

    try:
        document = docx.Document(io.BytesIO(source.data))
    except Exception as exc:  # zip, XML and schema errors alike
        raise ExtractError(f"the DOCX file is damaged ({type(exc).__name__}: {exc})") from None
    parts: list[str] = []
    sections: list[tuple[int, str]] = []
    offset = 0

    def add(text: str) -> None:
        nonlocal offset
        if not text.strip():
            return
        if parts:
            parts.append("\n\n")
            offset += 2
        parts.append(text)
        offset += len(text)

    for block in document.element.body.iterchildren():
        tag = block.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = Paragraph(block, document)
            # The style id from the XML ("Heading1", "Title"): resolving the style object
            # through python-docx costs more than the rest of the file.
            style = block.style or ""
            if style.startswith(("Heading", "Title")) and paragraph.text.strip():
                sections.append((offset + (2 if parts else 0), paragraph.text.strip()))
            add(paragraph.text)
        elif tag == "tbl":
            table = Table(block, document)
            rows = ["\t".join(cell.text for cell in row.cells) for row in table.rows]
            add("\n".join(rows))
    text = "".join(parts)
    if not text.strip():
        raise ExtractError("the DOCX file holds no text")
    props = document.core_properties
    metadata = {k: v for k, v in (("title", props.title), ("author", props.author)) if v}
    return Extracted(text, "docx", version_of("python-docx"), sections=sections, metadata=metadata)
