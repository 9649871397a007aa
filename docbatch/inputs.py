"""What the CLI's inputs name: files, folders (every file below, hidden ones skipped) and
globs (``'inbox/**/*.pdf'``, for shells that do not expand them).

``.jsonl``/``.ndjson`` files hold documents (``custom_id``, ``text``, ``metadata``?), a
UTF-8 ``.txt``/``.md`` file is one document as it is, and any other file (PDF, DOCX,
HTML, e-mail, an archive, text in another encoding) is one document for the extract
stage. A file's ``custom_id`` is its path as given, or relative to the folder named.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from docbatch.domain.files import JSONL_SUFFIXES, FileDocument, inline_text
from docbatch.schema.errors import InputError

GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    path: Path
    name: str  # its custom_id

    @property
    def jsonl(self) -> bool:
        return self.path.suffix.lower() in JSONL_SUFFIXES


def _hidden(parts: Iterable[str]) -> bool:
    return any(p.startswith(".") and p not in (".", "..") for p in parts)


def expand(paths: Iterable[Path]) -> list[InputFile]:
    """Every file the inputs name, in the order given (a folder's and a glob's sorted)."""
    out: list[InputFile] = []
    for path in paths:
        text = str(path)
        if not path.exists() and GLOB_CHARS & set(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and not _hidden(m.parts)]
            if not files:
                raise InputError("input", f"{text}: no file matches")
            out.extend(InputFile(m, str(m)) for m in files)
        elif path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path).parts)
            )
            if not files:
                raise InputError("input", f"{text}: the folder holds no files")
            out.extend(InputFile(p, p.relative_to(path).as_posix()) for p in files)
        elif path.exists():
            out.append(InputFile(path, text))
        else:
            raise FileNotFoundError(2, "No such file or directory", text)
    return out


def needs_extraction(files: Iterable[InputFile]) -> bool:
    """Whether any input may need the extract stage (a guess from the names; a ``.txt``
    that is not UTF-8 needs it too, which the job itself finds out)."""
    return any(not f.jsonl and f.path.suffix.lower() not in (".txt", ".md") for f in files)


def _jsonl(f: InputFile) -> Iterator[tuple[dict[str, Any], int | None]]:
    with f.path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                yield json.loads(raw), number
            except ValueError as exc:
                raise InputError(
                    "document", f"{f.name}: malformed JSON: {exc}", line=number
                ) from None


def _opener(path: Path) -> Any:
    def open_file() -> IO[bytes]:
        return path.open("rb")

    return open_file


def iter_documents(
    files: Iterable[InputFile], text_limit: int = 1_000_000
) -> Iterator[tuple[dict[str, Any] | FileDocument, int | None]]:
    """``(document, line number or None)`` for ``docbatch.domain.jobs.create_job``."""
    for f in files:
        if f.jsonl:
            yield from _jsonl(f)
            continue
        size = f.path.stat().st_size
        if f.path.suffix.lower() in (".txt", ".md") and size <= text_limit:
            text = inline_text(f.name, f.path.read_bytes(), text_limit)
            if text is not None:
                yield {"custom_id": f.name, "text": text}, None
                continue
        yield FileDocument(f.name, size, _opener(f.path)), None
