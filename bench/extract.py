"""Extraction throughput: docbatch's extractor (format detection, page map, the sandbox
child) vs the chosen library called directly on the same files, one core each.

    python -m bench.extract --files 200 --pages 5
    python -m bench.run --only extract          # the same, as rows of the summary table

Per format: PDF (pypdfium2), DOCX (python-docx), HTML (trafilatura, same options as
ours) and EML (the standard library's ``email``). Prints pages/s (PDF) or files/s
(the others) for both and the ratio direct seconds / our seconds (target >= 0.9). The
two sides alternate in batches of 25 files, so a load change on a shared machine
lands on both. The file makers are shared with bench/extract_folder.py.
"""

from __future__ import annotations

import argparse
import email.policy
import io
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from bench.env import CORPUS

BATCH = 25
EMAIL_HEADERS = ("subject", "from", "to", "cc", "date", "message-id")
TARGET = 0.9
WORDS = (  # noqa: SIM905
    "the socket module opens network connections and sends bytes between hosts while the json "
    "module turns documents into dictionaries for web services and pathlib handles paths"
).split()


class Prose:
    """Unique English text from the stdlib corpus's sentences (ASCII: fpdf2's core fonts
    are Latin-1). Every text starts with its key, so no two files share bytes (docbatch
    reuses an earlier extraction of the same bytes, which would flatter the figure)."""

    def __init__(self) -> None:
        self.sentences: list[str] = []
        path = CORPUS / "stdlib-docs.jsonl"
        if path.exists():
            import json

            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    text = " ".join(json.loads(line)["text"].split())
                    for s in re.split(r"(?<=[.!?])\s+", text):
                        if 40 <= len(s) <= 300 and s.isascii() and s[0].isupper():
                            self.sentences.append(s)
        if not self.sentences:  # no corpus: the same made-up sentence shapes
            self.sentences = [
                " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(12)).capitalize() + "."
                for i in range(200)
            ]

    def text(self, key: str, chars: int) -> str:
        rng = random.Random(key)
        out = [f"{key.replace('-', ' ').capitalize()}."]
        size = len(out[0])
        while size < chars:
            s = rng.choice(self.sentences)
            out.append(s)
            size += len(s) + 1
        return " ".join(out)

    def paragraphs(self, key: str, count: int, chars: int) -> list[str]:
        return [self.text(f"{key}-{i + 1}", chars) for i in range(count)]


def make_pdf(pages: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 5, text)
    return bytes(pdf.output())


def make_docx(title: str, paragraphs: list[str]) -> bytes:
    import docx

    d = docx.Document()
    d.add_heading(title, level=1)
    for p in paragraphs:
        d.add_paragraph(p)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def make_html(title: str, paragraphs: list[str]) -> bytes:
    """A page with boilerplate around the article (menus, footer), as sites are."""
    half = max(1, len(paragraphs) // 2)
    body = "".join(f"<p>{p}</p>\n" for p in paragraphs[:half])
    body += "<h2>Details</h2>\n" + "".join(f"<p>{p}</p>\n" for p in paragraphs[half:])
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title></head><body>\n"
        "<nav><ul><li><a href='/'>Home</a></li><li><a href='/docs'>Documentation</a></li>"
        "<li><a href='/login'>Sign in to your account</a></li></ul></nav>\n"
        f"<main><article><h1>{title}</h1>\n{body}</article></main>\n"
        "<aside><p>Related: more notes, older posts, subscribe to the newsletter.</p></aside>\n"
        "<footer><p>Copyright 2026 Example Corp. All rights reserved. Privacy policy. "
        "Cookie settings.</p></footer></body></html>"
    ).encode()


def make_eml(subject: str, body: str, attachment: tuple[str, bytes] | None = None) -> bytes:
    message = EmailMessage()
    message["From"] = "Ada <ada@example.org>"
    message["To"] = "ops@example.org"
    message["Subject"] = subject
    message["Date"] = "Tue, 24 Nov 2026 01:00:00 +0000"
    message["Message-ID"] = f"<{subject.lower().replace(' ', '.')}@example.org>"
    message.set_content(body)
    if attachment is not None:
        name, data = attachment
        subtype = "pdf" if name.endswith(".pdf") else "octet-stream"
        message.add_attachment(data, maintype="application", subtype=subtype, filename=name)
    return bytes(message)


# -- the libraries called directly, as a user who picked them would ----------------------
def direct_pdf(data: bytes) -> int:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    n = len(pdf)
    for i in range(n):
        page = pdf[i]
        textpage = page.get_textpage()
        textpage.get_text_range()
        textpage.close()
        page.close()
    pdf.close()
    return n


def direct_docx(data: bytes) -> int:
    import docx

    "\n".join(p.text for p in docx.Document(io.BytesIO(data)).paragraphs)
    return 1


def direct_html(data: bytes) -> int:
    import trafilatura

    trafilatura.extract(
        data.decode("utf-8"),
        output_format="markdown",
        include_comments=False,
        include_tables=True,
        favor_recall=True,
    )
    return 1


def direct_eml(data: bytes) -> int:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    # The headers ours records (worker/extract/mail.py HEADERS), each parsed once.
    {h: str(v) for h in EMAIL_HEADERS if (v := message.get(h)) is not None}
    part = message.get_body(preferencelist=("plain", "html"))
    if part is not None:
        part.get_content()
    for att in message.iter_attachments():
        att.get_payload(decode=True)
    return 1


@dataclass
class Format:
    kind: str
    library: str
    unit: str  # what is counted: "pages" (PDF) or "files"
    files: list[bytes]
    count: int
    direct: Callable[[bytes], object]


def formats(files: int, pages: int, prose: Prose | None = None) -> list[Format]:
    """``files`` files of each format; PDFs of ``pages`` pages of ~2,400 characters."""
    prose = prose or Prose()
    pdfs = [make_pdf(prose.paragraphs(f"pdf-{f}", pages, 2400)) for f in range(files)]
    docs = [make_docx(f"Notes {f}", prose.paragraphs(f"docx-{f}", 10, 600)) for f in range(files)]
    html = [make_html(f"Page {f}", prose.paragraphs(f"html-{f}", 8, 500)) for f in range(files)]
    attachment = ("report.pdf", pdfs[0])
    mail = [
        make_eml(
            f"Report {f}",
            "\n\n".join(prose.paragraphs(f"eml-{f}", 4, 400)),
            attachment if f % 5 == 0 else None,
        )
        for f in range(files)
    ]
    return [
        Format("pdf", "pypdfium2", "pages", pdfs, files * pages, direct_pdf),
        Format("docx", "python-docx", "files", docs, files, direct_docx),
        Format("html", "trafilatura", "files", html, files, direct_html),
        Format("eml", "stdlib email", "files", mail, files, direct_eml),
    ]


def _timed(files: list[bytes], fn: Callable[[bytes], object]) -> float:
    t0 = time.perf_counter()
    for data in files:
        fn(data)
    return time.perf_counter() - t0


def measure(fmts: list[Format], rounds: int = 2) -> list[dict[str, Any]]:
    """Direct and our seconds per format, alternating batch by batch (and which side goes
    first), summed over ``rounds`` passes."""
    from docbatch.worker.extract.base import Limits
    from docbatch.worker.extract.sandbox import Sandbox

    out = []
    with Sandbox(Limits()) as box:

        def ours(data: bytes) -> object:
            return box.extract(data, "f")

        for fmt in fmts:
            _timed(fmt.files[:5], fmt.direct)  # warm imports, both sides
            _timed(fmt.files[:5], ours)
            direct_s = ours_s = 0.0
            for r in range(rounds):
                for b, start in enumerate(range(0, len(fmt.files), BATCH)):
                    batch = fmt.files[start : start + BATCH]
                    if (b + r) % 2:
                        ours_s += _timed(batch, ours)
                        direct_s += _timed(batch, fmt.direct)
                    else:
                        direct_s += _timed(batch, fmt.direct)
                        ours_s += _timed(batch, ours)
            count = fmt.count * rounds
            out.append(
                {
                    "kind": fmt.kind,
                    "library": fmt.library,
                    "unit": fmt.unit,
                    "files": len(fmt.files),
                    "count": fmt.count,
                    "mb": sum(map(len, fmt.files)) / 1e6,
                    "direct_rate": count / direct_s,
                    "ours_rate": count / ours_s,
                    "ratio": direct_s / ours_s,
                    "rounds": rounds,
                }
            )
    return out


def describe(r: dict[str, Any]) -> str:
    return (
        f"{r['files']} {r['kind'].upper()} files ({r['count']} {r['unit']}, {r['mb']:.1f} MB): "
        f"{r['library']} direct {r['direct_rate']:,.1f} {r['unit']}/s, docbatch extractor "
        f"(detect + sandbox child) {r['ours_rate']:,.1f} {r['unit']}/s; one core each, "
        f"alternating batches of {BATCH}, {r['rounds']} rounds"
    )


def run(bench: Any, row: Callable[..., None], files: int = 200, pages: int = 5) -> None:
    """bench/run.py's ``extract`` figure: one row per format."""
    for r in measure(formats(files, pages)):
        row(
            f"extract {r['kind']} (ours / {r['library']} direct, {r['unit']}/s)",
            r["ratio"],
            f">= {TARGET}",
            r["ratio"] >= TARGET,
            describe(r),
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--pages", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    for r in measure(formats(args.files, args.pages), args.rounds):
        print(f"{r['kind']}: ratio {r['ratio']:.3f} (target >= {TARGET}); {describe(r)}")


if __name__ == "__main__":
    main()
