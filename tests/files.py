"""Real files for the extraction tests, written by the libraries users' files come from:
PDFs with a text layer (fpdf2), DOCX (python-docx), an HTML page with boilerplate, an
e-mail with an attachment (the standard library), archives, a scanned page."""

from __future__ import annotations

import io
import tarfile
import zipfile
from email.message import EmailMessage

PAGES = [
    "The socket module opens network connections. It sends and receives bytes.",
    "The json module encodes and decodes JSON documents for web services.",
    "The pathlib module handles file system paths as objects with methods.",
]


def make_pdf(pages: list[str], title: str = "", **encryption: str) -> bytes:
    """A title (metadata, not text) makes the bytes unique: extraction is reused by sha256."""
    from fpdf import FPDF

    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    if encryption:
        pdf.set_encryption(**encryption)
    return bytes(pdf.output())


def make_docx(title: str = "") -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.title = title
    document.add_heading("Networking", level=1)
    document.add_paragraph(PAGES[0])
    document.add_heading("Data formats", level=1)
    document.add_paragraph(PAGES[1])
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "module", "use"
    table.cell(1, 0).text, table.cell(1, 1).text = "json", "encode"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


HTML = """<!DOCTYPE html><html><head><title>Standard library notes</title></head><body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/about">About us</a></li>
<li><a href="/login">Sign in to your account</a></li></ul></nav>
<main><article><h1>Working with sockets</h1>
<p>{} Servers listen on a port and accept connections from many clients at once.</p>
<h2>Encoding data</h2>
<p>{} Most web services speak JSON over HTTP, and the module turns it into dicts.</p>
</article></main>
<footer><p>Copyright 2026 Example Corp. All rights reserved. Privacy policy. Cookie settings.</p>
</footer></body></html>""".format(*PAGES)


def make_html(title: str) -> bytes:
    """HTML with the same text and unique bytes (a meta tag carries the title)."""
    return HTML.replace("<head>", f'<head><meta name="run" content="{title}">').encode()


def make_email(attachment: bytes) -> bytes:
    message = EmailMessage()
    message["From"] = "Ada <ada@example.org>"
    message["To"] = "ops@example.org"
    message["Subject"] = "Nightly report"
    message["Date"] = "Tue, 24 Nov 2026 01:00:00 +0000"
    message.set_content("The nightly run finished.\nAll documents were processed.")
    message.add_attachment(attachment, maintype="application", subtype="pdf", filename="report.pdf")
    return bytes(message)


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def make_tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_zip_bomb() -> bytes:
    return make_zip({"zeros.txt": b"\0" * 50_000_000})


def make_scan() -> bytes:
    """A page of text rendered to an image-only PDF (no text layer)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (1700, 400), "white")
    font = ImageFont.load_default(size=64)
    ImageDraw.Draw(image).text((60, 150), "Sockets send bytes", fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PDF", resolution=150)
    return buffer.getvalue()


def make_long_pdf(
    pages: int, text: str = "A page of text that takes a while to read. " * 20
) -> bytes:
    """``pages`` copies of one page of text (copied by PDFium: writing each with fpdf2
    would take minutes)."""
    import pypdfium2 as pdfium

    source = pdfium.PdfDocument(make_pdf([text]))
    out = pdfium.PdfDocument.new()
    try:
        out.import_pages(source, [0] * pages)
        buffer = io.BytesIO()
        out.save(buffer)
    finally:
        out.close()
        source.close()
    return buffer.getvalue()


def make_stored_zip(members: dict[str, bytes]) -> bytes:
    """An uncompressed zip: its first member's bytes (a PDF's ``%PDF-``) show in its head."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def make_tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A plain tar; ``links`` are symbolic links (name -> target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buffer.getvalue()


def make_tar_gz_bomb(declared: int, block: int = 1 << 20) -> bytes:
    """A .tar.gz whose one member declares ``declared`` bytes (of zeros, all there): gzip
    members concatenated, which a reader inflates as one stream, so writing it costs
    nothing while inflating it costs the declared bytes."""
    import gzip

    info = tarfile.TarInfo("zeros.bin")
    info.size = declared
    zeros = gzip.compress(b"\0" * block, compresslevel=9)
    return gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)) + zeros * (declared // block)


def make_email_with(attachments: list[tuple[str, bytes | EmailMessage]]) -> bytes:
    """An e-mail with these attachments: bytes, or a message (forwarded as message/rfc822)."""
    message = EmailMessage()
    message["From"] = "Ada <ada@example.org>"
    message["To"] = "ops@example.org"
    message["Subject"] = "Forwarded files"
    message.set_content("Files attached.")
    for name, content in attachments:
        if isinstance(content, EmailMessage):
            message.add_attachment(content, filename=name)
        else:
            message.add_attachment(content, maintype="text", subtype="plain", filename=name)
    return bytes(message)
