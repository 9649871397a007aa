"""Extraction throughput: docbatch's extractor (format detection, page map, the sandbox
child) vs the chosen library called directly on the same files, one core each.

    python -m bench.extract --files 200 --pages 5

Prints pages/s for both and the ratio (target >= 0.9), per format.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

from worker.extract.base import Limits
from worker.extract.sandbox import Sandbox

WORDS = (  # noqa: SIM905
    "the socket module opens network connections and sends bytes between hosts while the json "
    "module turns documents into dictionaries for web services and pathlib handles paths"
).split()


def _text(i: int, n: int = 400) -> str:
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(n))


def make_pdfs(files: int, pages: int) -> list[bytes]:
    from fpdf import FPDF

    out = []
    for f in range(files):
        pdf = FPDF()
        pdf.set_font("helvetica", size=10)
        for p in range(pages):
            pdf.add_page()
            pdf.multi_cell(0, 5, _text(f * pages + p))
        out.append(bytes(pdf.output()))
    return out


def make_docx(files: int, paragraphs: int) -> list[bytes]:
    import docx

    out = []
    for f in range(files):
        d = docx.Document()
        for p in range(paragraphs):
            d.add_paragraph(_text(f + p, 120))
        buf = io.BytesIO()
        d.save(buf)
        out.append(buf.getvalue())
    return out


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


def timed(files: list[bytes], fn: Callable[[bytes], object]) -> float:
    t0 = time.perf_counter()
    for data in files:
        fn(data)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--pages", type=int, default=5)
    args = p.parse_args()
    pdfs = make_pdfs(args.files, args.pages)
    docs = make_docx(args.files, 10)
    pages = args.files * args.pages
    with Sandbox(Limits()) as box:
        box.extract(pdfs[0], "warm.pdf")
        for kind, files, direct, unit, count in (
            ("pdf", pdfs, direct_pdf, "pages", pages),
            ("docx", docs, direct_docx, "files", args.files),
        ):
            timed(files[:5], direct)  # warm imports
            base = timed(files, direct)
            ours = timed(files, lambda d: box.extract(d, "f"))
            print(
                f"{kind}: direct {count / base:,.1f} {unit}/s, docbatch extractor "
                f"{count / ours:,.1f} {unit}/s, ratio {base / ours:.3f} (target >= 0.9)"
            )


if __name__ == "__main__":
    main()
