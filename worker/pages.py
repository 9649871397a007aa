"""Pages and sections for results that carry offsets into a document extracted from a file.

The extract stage records, per document, where each page (PDF), heading (DOCX, HTML)
and part (e-mail headers, body) starts in the text. ``annotate`` adds ``page`` and
``section`` next to every ``start`` offset in a result (entities, answers, classify's
chunk scores, extractive summary spans), and ``chunk_pages`` beside an embedding's
``chunks`` ([start, end, tokens] each). Example::

    annotate(output, pages=[[0, 1], [1200, 2]], sections=[])
    # {"entities": [{"start": 1300, ...}]} -> {"entities": [{"start": 1300, "page": 2, ...}]}
"""

from __future__ import annotations

import bisect
from typing import Any


class PageMap:
    def __init__(self, pages: list[list[Any]], sections: list[list[Any]]) -> None:
        self.page_starts = [int(p[0]) for p in pages]
        self.page_numbers = [p[1] for p in pages]
        self.section_starts = [int(s[0]) for s in sections]
        self.section_names = [s[1] for s in sections]

    @classmethod
    def from_output(cls, output: dict[str, Any] | None) -> PageMap | None:
        """The map in an extract result's output, None when it has neither pages nor
        sections (plain text)."""
        if not output or not (output.get("pages") or output.get("sections")):
            return None
        return cls(output.get("pages") or [], output.get("sections") or [])

    @staticmethod
    def _at(starts: list[int], values: list[Any], offset: int) -> Any:
        if not starts:
            return None
        return values[max(bisect.bisect_right(starts, offset) - 1, 0)]

    def page_at(self, offset: int) -> int | None:
        return self._at(self.page_starts, self.page_numbers, offset)  # type: ignore[no-any-return]

    def section_at(self, offset: int) -> str | None:
        return self._at(self.section_starts, self.section_names, offset)  # type: ignore[no-any-return]

    def mark(self, item: dict[str, Any], offset: int) -> None:
        if self.page_starts:
            item["page"] = self.page_at(offset)
        if self.section_starts:
            item["section"] = self.section_at(offset)


def annotate(data: dict[str, Any], where: PageMap) -> None:
    """Add pages and sections to ``data`` (a result's output) in place."""
    chunks = data.get("chunks")
    if isinstance(chunks, list) and chunks and isinstance(chunks[0], list):
        if where.page_starts:
            data["chunk_pages"] = [where.page_at(int(c[0])) for c in chunks]
        if where.section_starts:
            data["chunk_sections"] = [where.section_at(int(c[0])) for c in chunks]
    _walk(data, where)


def _walk(value: Any, where: PageMap) -> None:
    if isinstance(value, dict):
        start = value.get("start")
        if isinstance(start, int) and not isinstance(start, bool):
            where.mark(value, start)
        for key, child in value.items():
            if key != "chunks":
                _walk(child, where)
    elif isinstance(value, list):
        for child in value:
            _walk(child, where)
