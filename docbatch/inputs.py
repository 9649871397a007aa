"""Reading documents from files: ``.jsonl`` (custom_id, text, metadata?) and ``.txt``/``.md``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from domain.sources import JSONL_SUFFIXES, TEXT_SUFFIXES, read_file
from schema.errors import InputError


def iter_documents(paths: Iterable[Path]) -> Iterator[tuple[dict, int | None]]:
    """Yield ``(document, line number or None)``; a text file is one document named by its path."""
    for path in paths:
        if path.suffix not in JSONL_SUFFIXES + TEXT_SUFFIXES:
            raise InputError("input", f"{path}: expected .jsonl, .txt or .md")
        yield from read_file(path, str(path))
