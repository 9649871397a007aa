"""The formats docbatch reads, in one list: kind, detector rule, extractor, libraries.

Everything else is derived from ``FORMATS``: detection (the rules, tried in this order,
containers first), the extractor the sandbox child runs, the "docbatch reads ..." message
of an unsupported file, and the library versions in the extractor identity that
extractions are recorded and reused under (``expand.extractor_for``), so a format can
not be added without its library joining the reuse key.

Adding a format is two files: the extractor module (``def extract_x(source: Source) ->
Extracted``) and its line here, e.g.::

    Format("rtf", "RTF", detect.starts_with(b"{\\\\rtf"),
           "docbatch.worker.extract.rtf:extract_rtf", libraries=("striprtf",)),
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from docbatch.worker.extract import detect
from docbatch.worker.extract.base import Extracted, Source

# A library named this is the Python standard library (its version is Python's).
STDLIB = "python"
# Only counted with OCR on (DOCBATCH_EXTRACT_OCR): the Tesseract binary.
TESSERACT = "tesseract"


@dataclass(frozen=True)
class Format:
    kind: str  # recorded as the extraction's output.kind
    label: str  # how the "docbatch reads ..." message names it
    matches: detect.Rule
    extractor: str  # "module:function", imported in the sandbox child
    libraries: tuple[str, ...] = ()  # distributions (or STDLIB) that shape its text
    ocr_libraries: tuple[str, ...] = ()  # the same, with OCR on only
    container: bool = False  # its files take its place (an archive is not a document)

    def load(self) -> Callable[[Source], Extracted]:
        module, _, function = self.extractor.partition(":")
        fn: Callable[[Source], Extracted] = getattr(importlib.import_module(module), function)
        return fn


_X = "docbatch.worker.extract."
FORMATS: tuple[Format, ...] = (
    Format("docx", "DOCX", detect.is_docx, _X + "office:extract_docx", libraries=("python-docx",)),
    Format(
        "zip",
        "zip archives",
        detect.is_zip,
        _X + "archive:unpack_zip",
        libraries=(STDLIB,),
        container=True,
    ),
    Format(
        "tar",
        "tar archives (.tar, .tar.gz, .tar.bz2, .tar.xz) and gzip/bzip2/xz files",
        detect.is_tar,
        _X + "archive:unpack_tar",
        libraries=(STDLIB,),
        container=True,
    ),
    Format(
        "pdf",
        "PDF",
        detect.is_pdf,
        _X + "pdf:extract_pdf",
        libraries=("pypdfium2",),
        ocr_libraries=(TESSERACT,),
    ),
    Format(
        "msg",
        "Outlook e-mail (.msg)",
        detect.starts_with(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"),
        _X + "mail:extract_msg",
        libraries=("olefile",),
    ),
    Format(
        "image",
        "images with OCR",
        detect.starts_with(b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*"),
        _X + "pdf:extract_image",
        libraries=("pillow",),
        ocr_libraries=(TESSERACT,),
    ),
    Format(
        "email",
        "e-mail (.eml)",
        detect.is_email,
        _X + "mail:extract_eml",
        # An HTML body goes through the HTML extractor.
        libraries=(STDLIB, "trafilatura", "charset-normalizer"),
    ),
    Format(
        "html",
        "HTML",
        detect.is_html,
        _X + "web:extract_html",
        libraries=("trafilatura", "charset-normalizer"),
    ),
    Format(
        "markdown",
        "Markdown",
        detect.named(".md", ".markdown"),
        _X + "text:extract_text",
        libraries=("charset-normalizer",),
    ),
    Format(
        "text",
        "text in any encoding",
        detect.is_text,
        _X + "text:extract_text",
        libraries=("charset-normalizer",),
    ),
)
BY_KIND = {f.kind: f for f in FORMATS}
CONTAINERS = frozenset(f.kind for f in FORMATS if f.container)


def detect_format(head: bytes, name: str, opener: Callable[[], IO[bytes]]) -> Format | None:
    """The first format whose rule matches; None for a format docbatch does not read."""
    probe = detect.Probe(head, name, opener)
    return next((f for f in FORMATS if f.matches(probe)), None)


def reads() -> str:
    """'docbatch reads DOCX, zip archives, ... and text in any encoding'."""
    labels = [f.label for f in FORMATS]
    return "docbatch reads " + ", ".join(labels[:-1]) + " and " + labels[-1]


def libraries(ocr: bool) -> list[str]:
    """Every library some format's text depends on (sorted, once each)."""
    names = {lib for f in FORMATS for lib in f.libraries}
    if ocr:
        names |= {lib for f in FORMATS for lib in f.ocr_libraries}
    return sorted(names)
