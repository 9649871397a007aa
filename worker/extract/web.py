"""HTML: the main content with boilerplate (menus, footers, ads) dropped, by trafilatura
(Apache-2.0; the best-scoring open main-content extractor in its own and third-party
evaluations). Headings become sections."""

from __future__ import annotations

import re

from worker.extract.base import Extracted, ExtractError, version_of
from worker.extract.text import decode

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def extract_html(data: bytes) -> Extracted:
    import trafilatura

    html = decode(data)
    markdown = trafilatura.extract(
        html,
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
    title = trafilatura.extract_metadata(html)
    if title is not None and title.title:
        metadata["title"] = title.title
    return Extracted(
        "\n".join(lines).strip("\n"),
        "html",
        version_of("trafilatura"),
        sections=sections,
        metadata=metadata,
    )
