"""Reading documents from files: ``.jsonl`` (custom_id, text, metadata?) and ``.txt``/``.md``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from schema.errors import InputError

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}


def iter_documents(paths: Iterable[Path]) -> Iterator[tuple[dict, int | None]]:
    """Yield ``(document, line number or None)``; a text file is one document named by its path."""
    for path in paths:
        if path.suffix in (".jsonl", ".ndjson"):
            with path.open("rb") as fh:
                for number, raw in enumerate(fh, start=1):
                    if not raw.strip():
                        continue
                    try:
                        yield json.loads(raw), number
                    except ValueError as exc:
                        raise InputError(
                            "document", f"{path}: malformed JSON: {exc}", line=number
                        ) from None
        elif path.suffix in TEXT_SUFFIXES:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise InputError("text", f"{path} is not valid UTF-8: {exc.reason}") from None
            yield {"custom_id": str(path), "text": text}, None
        else:
            raise InputError("input", f"{path}: expected .jsonl, .txt or .md")
