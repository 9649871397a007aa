"""Documents submitted as files: what every entry point hands ``docbatch.domain.jobs.create_job``.

A ``FileDocument`` is a file whose text the extract stage will find (PDF, DOCX, HTML,
e-mail, an archive of such files, text in an unknown encoding). ``create_job`` copies
its bytes into a blob (``docbatch.domain.blobs``), with their sha256, and holds the job's model
units for it until it is extracted (``docbatch.domain.waiting``). The api (multipart parts), the
folder schedules (``docbatch.domain.sources``) and the CLI (``docbatch.inputs``) build them; none
of them parses the file. Example::

    doc = FileDocument("reports/q3.pdf", size=path.stat().st_size, opener=path.open_rb)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any

from docbatch.schema.errors import InputError
from docbatch.schema.text_checks import is_blank

JSONL_SUFFIXES = (".jsonl", ".ndjson")
TEXT_SUFFIXES = (".txt", ".md")
MAX_NAME_CHARS = 512


@dataclass
class FileDocument:
    """A document given as a file. ``opener`` opens its bytes (called once, when the job
    is written); ``size`` is what the caller saw (a file over
    DOCBATCH_EXTRACT_MAX_BYTES is not read at all and fails alone at extraction)."""

    custom_id: str
    size: int
    opener: Callable[[], IO[bytes]]
    metadata: dict[str, Any] | None = None


def relative_name(name: str) -> str:
    """A file's name as a ``custom_id``: its relative path with ``/`` separators, no
    leading ``/`` or ``./``, no ``..`` parts (a client's path never names anything of
    ours; this is only its label)."""
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("/", ".", "..")]
    cleaned = "/".join(parts)
    if not cleaned.strip():
        raise InputError("file", f"file name {name!r} is empty once cleaned; give the file a name")
    if len(cleaned) > MAX_NAME_CHARS:
        raise InputError(
            "file", f"file name is {len(cleaned)} characters; the limit is {MAX_NAME_CHARS}"
        )
    return cleaned


def is_jsonl_name(name: str) -> bool:
    return name.lower().endswith(JSONL_SUFFIXES)


def inline_text(name: str, data: bytes, limit: int) -> str | None:
    """The text of a ``.txt``/``.md`` file that is UTF-8 and at most ``limit`` bytes (it
    needs no extraction: the job takes it as it is); None for anything else."""
    if not name.lower().endswith(TEXT_SUFFIXES) or len(data) > limit or b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    return None if is_blank(text) else text
