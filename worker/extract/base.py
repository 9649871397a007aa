"""What every extractor returns, the limits it obeys, and the error it raises."""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, field
from typing import Any

from docbatch.schema.errors import PermanentError


class ExtractError(PermanentError):
    """This file cannot be turned into text; the message says why and what to change."""


@dataclass(frozen=True)
class Limits:
    """Per-document extraction limits (settings ``DOCBATCH_EXTRACT_*``)."""

    max_pages: int = 2000
    max_bytes: int = 100_000_000
    max_text_chars: int = 10_000_000
    archive_max_files: int = 10_000
    archive_max_total_bytes: int = 1_000_000_000
    archive_max_ratio: float = 100.0
    ocr: bool = False
    ocr_languages: str = "eng"
    time_limit_seconds: float = 60.0


@dataclass
class Attachment:
    """A file found inside another (an e-mail attachment, an archive member)."""

    name: str
    data: bytes


@dataclass
class Extracted:
    text: str
    kind: str
    library: str
    # (offset where the page starts in ``text``, 1-based page number), ascending.
    pages: list[tuple[int, int]] = field(default_factory=list)
    # (offset where the section starts, its heading or part name), ascending.
    sections: list[tuple[int, str]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)

    def page_at(self, offset: int) -> int | None:
        """The page holding character ``offset`` of the text (None: no page map)."""
        return _lookup(self.pages, offset)

    def section_at(self, offset: int) -> str | None:
        return _lookup(self.sections, offset)


def _lookup(starts: list[tuple[int, Any]], offset: int) -> Any:
    if not starts:
        return None
    i = bisect.bisect_right([s for s, _ in starts], offset) - 1
    return starts[max(i, 0)][1]


@functools.cache
def version_of(package: str) -> str:
    """``"name version"`` of an installed package (read once: the lookup is slow)."""
    from importlib.metadata import version

    return f"{package} {version(package)}"
