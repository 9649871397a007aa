"""The formats docbatch reads are one list (worker/extract/registry.py): detection, the
extractors, the "docbatch reads ..." message and the extractor identity that reuse keys
on all come from it. No server needed."""

from __future__ import annotations

import pytest

from docbatch.schema.settings import Settings
from docbatch.worker.extract import expand, registry
from docbatch.worker.extract.base import ExtractError, Limits
from docbatch.worker.extract.formats import extract
from tests.files import (
    HTML,
    PAGES,
    make_docx,
    make_email,
    make_pdf,
    make_stored_zip,
    make_tar,
    make_tar_gz,
)

pytestmark = pytest.mark.fast


def _kind(data: bytes, name: str = "f") -> str | None:
    import io

    fmt = registry.detect_format(data[:4096], name, lambda: io.BytesIO(data))
    return fmt.kind if fmt else None


def test_containers_are_detected_before_what_their_first_member_looks_like():
    pdf = make_pdf(PAGES[:1])
    assert b"%PDF-" in make_stored_zip({"a.pdf": pdf})[:1024]
    assert _kind(make_stored_zip({"a.pdf": pdf, "notes.txt": b"x"})) == "zip"
    assert _kind(make_tar({"a.pdf": pdf})) == "tar"
    assert _kind(make_tar_gz({"a.html": HTML.encode()})) == "tar"
    assert _kind(make_docx()) == "docx"
    assert _kind(pdf) == "pdf"
    assert _kind(make_email(pdf)) == "email"
    assert _kind(HTML.encode()) == "html"
    assert _kind(b"# Title", "a.md") == "markdown"
    assert _kind(b"plain words") == "text"
    assert _kind(bytes(range(256))) is None


def test_every_format_has_a_loadable_extractor_and_is_named_in_the_refusal():
    for fmt in registry.FORMATS:
        assert callable(fmt.load()), fmt.kind
        assert fmt.libraries or fmt.ocr_libraries, f"{fmt.kind} names no library"
    with pytest.raises(ExtractError) as refused:
        extract(bytes(range(256)) * 4, "blob.bin", Limits())
    for fmt in registry.FORMATS:
        assert fmt.label in str(refused.value)


def test_a_new_format_joins_the_reuse_key(monkeypatch):
    """Its library's version is part of the extractor revision without another edit: a
    format added to the list cannot be reused under the old key."""
    settings = Settings()
    before = expand.extractor_for(settings).revision
    for library in registry.libraries(ocr=False):
        assert f"{library} " in expand.versions(False), library
    new = registry.Format(
        "rtf", "RTF", lambda p: p.head.startswith(b"{\\rtf"), "x:y", libraries=("pytest",)
    )
    monkeypatch.setattr(registry, "FORMATS", (*registry.FORMATS, new))
    expand.versions.cache_clear()
    try:
        after = expand.extractor_for(settings)
        assert "pytest " in expand.versions(False)
        assert after.revision != before
        assert "RTF" in registry.reads()
    finally:
        monkeypatch.undo()
        expand.versions.cache_clear()
    assert expand.extractor_for(settings).revision == before
