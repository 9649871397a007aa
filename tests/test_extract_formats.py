"""Extraction of real files the tests write: PDF (fpdf2), DOCX (python-docx), HTML with
boilerplate, e-mail with an attachment, a scanned page, archives, and bad files that
must fail alone with their reason (worker/extract)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from docbatch.worker.extract.base import Budget, Extracted, ExtractError, Limits, Spool
from docbatch.worker.extract.formats import extract
from docbatch.worker.extract.sandbox import Sandbox
from tests.files import HTML, PAGES, make_docx, make_email, make_pdf

LIMITS = Limits()


def _spool(directory: Path, data: bytes, limits: Limits = LIMITS) -> Spool:
    """Where the files inside ``data`` go, with the budget of an upload of ``data``."""
    return Spool(directory, Budget.for_upload(limits, len(data)))


def _at(result: Extracted, needle: str) -> int:
    offset = result.text.index(needle)
    return offset


@pytest.mark.fast
def test_pdf_text_layer_and_page_map():
    result = extract(make_pdf(PAGES), "a.pdf", LIMITS)
    assert result.kind == "pdf" and result.library.startswith("pypdfium2 ")
    for number, page in enumerate(PAGES, start=1):
        offset = _at(result, page.split(".")[0])
        assert result.page_at(offset) == number
    assert result.metadata["pages"] == 3


@pytest.mark.fast
def test_docx_paragraphs_tables_and_headings():
    result = extract(make_docx(), "a.docx", LIMITS)
    assert result.kind == "docx"
    assert PAGES[0] in result.text and PAGES[1] in result.text
    assert "json\tencode" in result.text
    assert [name for _, name in result.sections] == ["Networking", "Data formats"]
    assert result.section_at(_at(result, PAGES[1])) == "Data formats"


@pytest.mark.fast
def test_html_main_content_without_boilerplate():
    result = extract(HTML.encode(), "page.bin", LIMITS)  # by content, not by name
    assert result.kind == "html"
    assert "Servers listen on a port" in result.text
    assert "Sign in to your account" not in result.text
    assert "Cookie settings" not in result.text
    assert result.section_at(_at(result, "Most web services")) == "Encoding data"


@pytest.mark.fast
def test_email_headers_body_and_attachment(tmp_path):
    pdf = make_pdf(PAGES[:1])
    mail = make_email(pdf)
    result = extract(mail, "mail", LIMITS, _spool(tmp_path, mail))
    assert result.kind == "email"
    assert result.metadata["subject"] == "Nightly report"
    assert result.text.startswith("Subject: Nightly report")
    assert result.section_at(_at(result, "All documents were processed")) == "body"
    [attachment] = result.attachments
    assert attachment.name == "report.pdf" and attachment.read_bytes() == pdf
    assert attachment.path is not None and attachment.path.parent == tmp_path
    assert extract(attachment.path, attachment.name, LIMITS).text.startswith("The socket")


@pytest.mark.fast
def test_text_in_any_encoding():
    text = "Grüße aus Köln: naïve café déjà vu, Straße und Übermut. " * 4
    result = extract(text.encode("cp1252"), "legacy.txt", LIMITS)
    assert result.text == text
    assert extract(b"# Title\n\nBody", "notes.md", LIMITS).kind == "markdown"


@pytest.mark.skipif(not shutil.which("tesseract"), reason="tesseract not installed")
def test_scanned_page_through_ocr():
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (1700, 400), "white")
    font = ImageFont.load_default(size=64)
    ImageDraw.Draw(image).text((60, 150), "Sockets send bytes", fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PDF", resolution=150)
    scanned = buffer.getvalue()
    with pytest.raises(ExtractError, match="no text layer.*DOCBATCH_EXTRACT_OCR"):
        extract(scanned, "scan.pdf", LIMITS)
    result = extract(scanned, "scan.pdf", Limits(ocr=True))
    assert "Sockets send bytes" in result.text
    assert "tesseract" in result.library and result.page_at(0) == 1


@pytest.mark.fast
def test_archives_unpack_into_members(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inbox/a.pdf", make_pdf(PAGES[:1]))
        zf.writestr("inbox/b.txt", "Plain text file.")
    data = buffer.getvalue()
    result = extract(data, "inbox.zip", LIMITS, _spool(tmp_path, data))
    assert result.kind == "zip"
    assert [a.name for a in result.attachments] == ["inbox/a.pdf", "inbox/b.txt"]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param("empty", "empty (0 bytes)", marks=pytest.mark.fast),
        pytest.param("encrypted", "encrypted", marks=pytest.mark.fast),
        pytest.param("corrupt", "damaged", marks=pytest.mark.fast),
        pytest.param("binary", "unsupported file type", marks=pytest.mark.fast),
        pytest.param("zip_bomb", "zip bomb", marks=pytest.mark.fast),
        ("too_many_pages", "DOCBATCH_EXTRACT_MAX_PAGES"),  # a long PDF: seconds to write
    ],
)
def test_bad_files_fail_with_their_reason(case, reason, tmp_path):
    limits = LIMITS
    if case == "empty":
        data = b""
    elif case == "encrypted":
        data = make_pdf(PAGES, owner_password="o", user_password="secret")
    elif case == "corrupt":
        data = make_pdf(PAGES)[:400]
    elif case == "binary":
        data = bytes(range(256)) * 8
    elif case == "zip_bomb":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("zeros.txt", b"\0" * 50_000_000)
        data = buffer.getvalue()
    else:
        data = make_pdf(["page"] * 5000)
        limits = Limits(max_pages=2000)
    with pytest.raises(ExtractError, match=re.escape(reason)):
        extract(data, "f", limits, _spool(tmp_path, data, limits))
    assert not list(tmp_path.iterdir())  # nothing of a refused archive stays on disk


def test_sandbox_bounds_a_slow_file_and_survives_a_crash():
    slow = make_pdf(["A page of text that takes a while to read."] * 1500)
    with Sandbox(Limits(time_limit_seconds=0.05, max_pages=5000)) as box:
        with pytest.raises(ExtractError, match="longer than 0.05 s"):
            box.extract(slow, "slow.pdf")
        # The child was replaced: the next file works.
        assert box.extract(make_pdf(PAGES[:1]), "ok.pdf").page_at(0) == 1

    # A parser that kills its process (a segfault in a C library looks the same).
    with Sandbox(Limits(), extractor=_crash_on_boom) as box:
        assert box.extract(b"before", "a.txt").text == "before"
        with pytest.raises(ExtractError, match="crashed on this file"):
            box.extract(b"BOOM", "boom.bin")
        assert box.extract(b"after the crash", "b.txt").text == "after the crash"


def _crash_on_boom(file: Path, name: str, limits: Limits, spool: Spool) -> Extracted:
    if file.read_bytes() == b"BOOM":
        os._exit(11)
    return extract(file, name, limits, spool)


@pytest.mark.fast
def test_offsets_in_any_result_name_their_page_and_section():
    """What the runner does to every task's output of an extracted document: entities,
    answers and extractive spans get ``page``/``section`` beside their ``start``; an
    embedding's chunks get ``chunk_pages``. The map is the one the extract stage stores."""
    from docbatch.worker.extract.expand import output_of as _output
    from docbatch.worker.pages import PageMap, annotate

    def _digest(data: bytes) -> tuple[int, str]:
        return len(data), hashlib.sha256(data).hexdigest()

    data = make_pdf(PAGES)
    result = extract(data, "a.pdf", LIMITS)
    where = PageMap.from_output(_output(result, *_digest(data)))
    assert where is not None
    json_at, path_at = _at(result, "json module"), _at(result, "pathlib")
    output = {
        "entities": [{"word": "json", "start": json_at, "end": json_at + 4}],
        "answers": [{"question": "q", "answer": {"text": "pathlib", "start": path_at}}],
        "chunks": [[0, json_at, 10], [json_at, path_at, 10], [path_at, len(result.text), 10]],
    }
    annotate(output, where)
    assert output["entities"][0]["page"] == 2
    assert output["answers"][0]["answer"]["page"] == 3
    assert output["chunk_pages"] == [1, 2, 3]

    docx = extract(make_docx(), "a.docx", LIMITS)
    where = PageMap.from_output(_output(docx, *_digest(make_docx())))
    assert where is not None
    spans = {"spans": [{"start": _at(docx, PAGES[1][:20])}]}
    annotate(spans, where)
    assert spans["spans"][0]["section"] == "Data formats" and "page" not in spans["spans"][0]


@pytest.mark.fast
def test_a_compressed_file_that_is_no_tar_is_its_one_member(tmp_path):
    import gzip

    data = gzip.compress(b"Notes, compressed on their own.")
    result = extract(data, "notes.txt.gz", LIMITS, _spool(tmp_path, data))
    [member] = result.attachments
    assert member.name == "notes.txt" and member.read_bytes().startswith(b"Notes")


@pytest.mark.fast
def test_a_long_name_bomb_in_a_tar_stops_at_the_budget(tmp_path):
    """A GNU long-name record declaring 6 GiB is read by tarfile itself, before any member
    is returned: the decompressed stream is capped, so it costs the budget, not 6 GiB."""
    import gzip
    import tarfile
    import time

    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, 6 << 30
    zeros = gzip.compress(b"a" * (1 << 20), compresslevel=9)
    bomb = gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)) + zeros * 6144
    limits = Limits(archive_max_total_bytes=10_000_000, archive_max_ratio=1e9)
    started = time.process_time()
    with pytest.raises(ExtractError, match="DOCBATCH_EXTRACT_ARCHIVE_MAX_TOTAL_BYTES"):
        extract(bomb, "bomb.tgz", limits, _spool(tmp_path, bomb, limits))
    assert time.process_time() - started < 5  # ~40 MB inflated, not 6 GiB


@pytest.mark.fast
def test_a_zip_declaring_too_many_entries_is_refused_before_it_is_parsed(tmp_path):
    data = make_zip_entries(400)
    limits = Limits(archive_max_files=100)
    with pytest.raises(ExtractError, match="more than 100 files.*ARCHIVE_MAX_FILES"):
        extract(data, "many.zip", limits, _spool(tmp_path, data, limits))


def make_zip_entries(n: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(n):
            zf.writestr(f"d{i}/", b"")  # directories: no documents, but entries to parse
    return buffer.getvalue()
