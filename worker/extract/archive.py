"""Zip and tar(.gz) archives: their files, each a document, within bomb limits.

Sizes are checked from the archive's own headers before anything is inflated, and again
while reading (a header can lie): the number of files, the total unpacked bytes and the
unpacked/packed ratio are settings."""

from __future__ import annotations

import io
import tarfile
import zipfile

from docbatch.worker.extract.base import Attachment, ExtractError, Limits


def _too_big(what: str, value: float, limit: float, setting: str) -> ExtractError:
    return ExtractError(f"the archive {what} {value:,.0f}; the limit is {limit:,.0f} ({setting})")


def unpack(data: bytes, kind: str, limits: Limits) -> list[Attachment]:
    members = _zip(data, limits) if kind == "zip" else _tar(data, limits)
    if not members:
        raise ExtractError("the archive holds no files")
    return members


def _check(count: int, total: int, packed: int, limits: Limits) -> None:
    if count > limits.archive_max_files:
        raise _too_big(
            "holds", count, limits.archive_max_files, "DOCBATCH_EXTRACT_ARCHIVE_MAX_FILES"
        )
    if total > limits.archive_max_total_bytes:
        raise _too_big(
            "unpacks to bytes:",
            total,
            limits.archive_max_total_bytes,
            "DOCBATCH_EXTRACT_ARCHIVE_MAX_TOTAL_BYTES",
        )
    if packed and total / packed > limits.archive_max_ratio:
        raise ExtractError(
            f"the archive unpacks to {total / packed:,.0f} times its size (a zip bomb?); the "
            f"limit is {limits.archive_max_ratio:,.0f} (DOCBATCH_EXTRACT_ARCHIVE_MAX_RATIO)"
        )


def _zip(data: bytes, limits: Limits) -> list[Attachment]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in archive.infolist() if not i.is_dir()]
    except zipfile.BadZipFile as exc:
        raise ExtractError(f"the zip archive is damaged ({exc})") from None
    _check(len(infos), sum(i.file_size for i in infos), len(data), limits)
    out: list[Attachment] = []
    total = 0
    for info in infos:
        with archive.open(info) as fh:
            # Never trust file_size: read at most what is left of the budget, plus one byte.
            budget = limits.archive_max_total_bytes - total
            content = fh.read(budget + 1)
        total += len(content)
        _check(len(out) + 1, total, len(data), limits)
        out.append(Attachment(info.filename, content))
    return out


def _tar(data: bytes, limits: Limits) -> list[Attachment]:
    out: list[Attachment] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            infos = [m for m in archive.getmembers() if m.isfile()]
            _check(len(infos), sum(m.size for m in infos), len(data), limits)
            for member in infos:
                fh = archive.extractfile(member)
                if fh is not None:
                    out.append(Attachment(member.name, fh.read(member.size)))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ExtractError(f"the tar archive is damaged ({exc})") from None
    return out
