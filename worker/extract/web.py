"""HTML: the main content with boilerplate (menus, footers, ads) dropped, by trafilatura
(Apache-2.0; the best-scoring open main-content extractor in its own and third-party
evaluations). Headings become sections."""

from __future__ import annotations

import re

import trafilatura

from docbatch.worker.extract.base import Extracted, ExtractError, Source, version_of
from docbatch.worker.extract.text import decode

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def extract_html(source: Source) -> Extracted:
    return html_text(source.data)


def html_text(data: bytes) -> Extracted:
    """The main text of an HTML page given as bytes (an e-mail's HTML body too)."""

    # Parsed once: extract() works on a copy of the tree, and the title is read from it
    # directly (trafilatura's extract_metadata would parse and walk the page again).
    tree = trafilatura.load_html(decode(data))
    if tree is None:
        raise ExtractError("the HTML page could not be parsed")
    markdown = trafilatura.extract(
        tree,
        output_format="markdown",
        include_comments=False,
        include_tables=True,
        favor_recall=True,
    )
    if not markdown or not markdown.strip():
        raise ExtractError("the HTML page has no main text")
    lines: list[str] = []
    sections: list[tuple[int, str]] = []
    offset = 0
    for line in markdown.splitlines():
        heading = _HEADING.match(line)
        if heading:
            line = heading.group(2).strip()
            sections.append((offset, line))
        lines.append(line)
        offset += len(line) + 1
    metadata = {}
    title = " ".join((tree.findtext(".//title") or "").split())
    if title:
        metadata["title"] = title
    return Extracted(
        "\n".join(lines).strip("\n"),
        "html",
        version_of("trafilatura"),
        sections=sections,
        metadata=metadata,
    )
