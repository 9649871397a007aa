"""Where a scheduled job's documents come from.

A source is anything with ``iter_documents()`` yielding ``({"custom_id", "text",
"metadata"?}, line or None)``, the shape ``schema.jobs.create_job`` validates. It is
stored on the schedule as a JSON spec with a ``type``; ``parse_source`` validates a
spec (errors name the field) and ``open_source`` builds the reader. The first kind
is a folder; an object store (``{"type": "s3", "bucket", "prefix"}``) is another
class with the same method and one more branch in ``parse_source``. Example::

    source = open_source({"type": "folder", "path": "/data/inbox", "pattern": "**/*"})
    for document, line in source.iter_documents():
        ...
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from schema.errors import InputError, PermanentError

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
SOURCE_TYPES = ("folder",)


class Source(Protocol):
    def iter_documents(self) -> Iterator[tuple[dict[str, Any], int | None]]:
        """Documents in a stable order; raise PermanentError when the source is unreadable."""
        ...


class FolderSource:
    """Files under ``path`` matching ``pattern``: ``.txt``/``.md`` are one document each,
    named by their path relative to the folder; ``.jsonl`` lines are documents as they are
    (their own ``custom_id``)."""

    def __init__(self, path: str, pattern: str = "**/*") -> None:
        self.root = Path(path)
        self.pattern = pattern

    def files(self) -> list[Path]:
        if not self.root.is_dir():
            raise PermanentError(f"source folder {self.root} does not exist or is not a folder")
        suffixes = TEXT_SUFFIXES + JSONL_SUFFIXES
        return sorted(
            p for p in self.root.glob(self.pattern) if p.is_file() and p.suffix in suffixes
        )

    def iter_documents(self) -> Iterator[tuple[dict[str, Any], int | None]]:
        for path in self.files():
            yield from read_file(path, path.relative_to(self.root).as_posix())


def read_file(path: Path, name: str) -> Iterator[tuple[dict[str, Any], int | None]]:
    """The documents of one file: each line of a ``.jsonl`` (with its line number), or a
    text file as one document whose ``custom_id`` is ``name``."""
    if path.suffix in JSONL_SUFFIXES:
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    yield json.loads(raw), number
                except ValueError as exc:
                    raise InputError(
                        "document", f"{name}: malformed JSON: {exc}", line=number
                    ) from None
        return
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("text", f"{name} is not valid UTF-8: {exc.reason}") from None
    yield {"custom_id": name, "text": text}, None


def parse_source(raw: Any, allowed_roots: list[str] | None = None) -> dict[str, Any]:
    """Validate a source spec; returns it normalised. ``allowed_roots`` (when non-empty)
    confines folders to those trees (DOCBATCH_SCHEDULE_FOLDER_ROOTS)."""
    if not isinstance(raw, dict):
        raise InputError("source", 'must be an object, e.g. {"type": "folder", "path": "/data"}')
    kind = raw.get("type", "folder")
    if kind not in SOURCE_TYPES:
        raise InputError(
            "source.type", f"unknown source {kind!r}; known: {', '.join(SOURCE_TYPES)}"
        )
    unknown = sorted(set(raw) - {"type", "path", "pattern"})
    if unknown:
        raise InputError(f"source.{unknown[0]}", "unknown field; expected type, path, pattern")
    path = raw.get("path")
    if not isinstance(path, str) or not path.strip():
        raise InputError("source.path", "is required: the folder to read")
    if not Path(path).is_absolute():
        raise InputError("source.path", f"must be an absolute path, got {path!r}")
    pattern = raw.get("pattern", "**/*")
    if not isinstance(pattern, str) or not pattern or pattern.startswith("/") or ".." in pattern:
        raise InputError("source.pattern", "must be a relative glob such as '**/*' or '*.md'")
    resolved = Path(path).resolve()
    if allowed_roots and not any(resolved.is_relative_to(Path(r).resolve()) for r in allowed_roots):
        raise InputError(
            "source.path",
            f"{path} is outside the folders schedules may read ({', '.join(allowed_roots)}; "
            "DOCBATCH_SCHEDULE_FOLDER_ROOTS)",
        )
    return {"type": kind, "path": str(resolved), "pattern": pattern}


def open_source(spec: dict[str, Any]) -> Source:
    if spec.get("type", "folder") == "folder":
        return FolderSource(spec["path"], spec.get("pattern", "**/*"))
    raise PermanentError(f"unknown source type {spec.get('type')!r}")
