"""Zip and tar archives (and gzip/bzip2/xz files): their files, each a document, within
the upload's budget (``base.Budget``: files and bytes for everything inside one upload,
nested archives included).

Nothing is inflated before the archive's own headers are checked against what is left
of the budget: a zip's central directory (every member's declared size) up front, a tar
member's header before its bytes. Bytes are then counted while they stream to the spool
(a header can lie), and a compressed tar's decompressed stream is capped as a whole, so
a bomb costs at most the budget's bytes of inflating, never the declared gigabytes.

Every member becomes a document: one that is not read (a link, a device, an encrypted or
damaged member) becomes a failed one saying why. Directories are not files.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import stat
import tarfile
import zipfile
import zlib
from typing import IO, Any, cast

from docbatch.worker.extract.base import Attachment, Extracted, ExtractError, Source, Spool
from docbatch.worker.extract.detect import GZIP, XZ, is_tar_header

LIBRARY = "python zipfile/tarfile (stdlib)"
# What a tar spends besides its members' bytes: a header block and padding per entry,
# long-name and pax records (bounded by the entries cap below), end-of-archive blocks.
_PER_ENTRY = 3 * 512
_SLACK = 1 << 20


def _extracted(kind: str, members: list[Attachment]) -> Extracted:
    if not members:
        raise ExtractError("the archive holds no files")
    return Extracted("", kind, LIBRARY, attachments=members)


def _max_entries(spool: Spool) -> int:
    """Entries an archive may hold: directories are no documents, but each costs a
    header to read and an object to hold, so they are capped too."""
    return 2 * spool.budget.files + 100


def _declared_entries(fh: IO[bytes]) -> int | None:
    """The entry count in a zip's end record, read before its central directory (which
    zipfile parses whole, into an object per entry, on opening)."""
    try:
        end = getattr(zipfile, "_EndRecData")(fh)  # noqa: B009 (private, stable since 2.x)
        return None if end is None else int(end[getattr(zipfile, "_ECD_ENTRIES_TOTAL")])  # noqa: B009
    except (AttributeError, IndexError, OSError, TypeError, ValueError, zipfile.BadZipFile):
        return None
    finally:
        fh.seek(0)


def unpack_zip(source: Source) -> Extracted:
    spool = source.members()
    with source.open() as fh:
        entries = _declared_entries(fh)
        if entries is not None and entries > _max_entries(spool):
            raise spool.budget.too_many_files()
        try:
            archive = zipfile.ZipFile(fh)
            infos = [i for i in archive.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise ExtractError(f"the zip archive is damaged ({exc})") from None
        # The central directory declares every member: refuse what cannot fit before
        # inflating a byte.
        spool.budget.check(files=len(infos), nbytes=sum(i.file_size for i in infos))
        return _extracted("zip", [_zip_member(archive, info, spool) for info in infos])


def _zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, spool: Spool) -> Attachment:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return spool.refuse(info.filename, "a symbolic link (links are not followed)")
    if info.flag_bits & 0x1:
        return spool.refuse(info.filename, "the member is encrypted (a password is needed)")
    try:
        with archive.open(info) as member:
            return spool.add(info.filename, member, declared=info.file_size)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        return spool.refuse(info.filename, f"the member is damaged ({exc})")


class _Capped(io.RawIOBase):
    """A stream that raises the budget's error once more than ``cap`` bytes were read
    from it; ``head(n)`` reads its first bytes without consuming them."""

    def __init__(self, inner: IO[bytes], cap: int, spool: Spool) -> None:
        self.inner, self.cap, self.spool, self.read_so_far = inner, cap, spool, 0
        self.pending = b""

    def readable(self) -> bool:
        return True

    def head(self, n: int) -> bytes:
        while len(self.pending) < n and (more := self._read(n - len(self.pending))):
            self.pending += more
        return self.pending[:n]

    def _read(self, n: int) -> bytes:
        data = self.inner.read(min(n, self.cap - self.read_so_far + 1))
        self.read_so_far += len(data)
        if self.read_so_far > self.cap:
            raise self.spool.budget.too_many_bytes()
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.pending:
            data, self.pending = self.pending[: len(buffer)], self.pending[len(buffer) :]
        else:
            data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _decompressed(raw: IO[bytes]) -> tuple[IO[bytes], bool]:
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(GZIP):
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw)), True
    if magic.startswith(b"BZh"):
        return cast(IO[bytes], bz2.BZ2File(raw)), True
    if magic.startswith(XZ):
        return cast(IO[bytes], lzma.LZMAFile(raw)), True
    return raw, False


_DAMAGED = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)


def unpack_tar(source: Source) -> Extracted:
    """A tar (plain or compressed), or one compressed file that is not a tar."""
    spool = source.members()
    max_entries = _max_entries(spool)
    cap = spool.budget.bytes + _PER_ENTRY * max_entries + _SLACK
    with source.open() as raw:
        try:
            inner, compressed = _decompressed(raw)
            capped = _Capped(inner, cap, spool)
            first = capped.head(512)
            stream = io.BufferedReader(capped, buffer_size=1 << 16)
            if compressed and not is_tar_header(first):
                return _extracted("tar", [spool.add(_stem(source.name), stream)])
            return _extracted("tar", _tar_members(stream, spool, max_entries))
        except _DAMAGED as exc:
            raise ExtractError(f"the tar archive is damaged ({exc})") from None


def _tar_members(stream: IO[bytes], spool: Spool, max_entries: int) -> list[Attachment]:
    out: list[Attachment] = []
    # Stream mode: members are read in order, each header checked before its bytes.
    with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="replace") as archive:
        entries = 0
        while (member := archive.next()) is not None:
            cast(Any, archive).members.clear()  # stream mode keeps every TarInfo otherwise
            entries += 1
            if entries > max_entries:
                raise spool.budget.too_many_files()
            if member.isdir():
                continue
            if member.issym() or member.islnk():
                out.append(
                    spool.refuse(
                        member.name, f"a link to {member.linkname!r} (links are not followed)"
                    )
                )
            elif not member.isfile():
                out.append(spool.refuse(member.name, "not a regular file (a device or a pipe)"))
            else:  # its declared size is checked before a byte of it is read
                fh = archive.extractfile(member)
                assert fh is not None
                out.append(spool.add(member.name, fh, declared=member.size))
    return out


def _stem(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    for suffix in (".gz", ".tgz", ".bz2", ".tbz2", ".xz", ".txz"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)] + (".tar" if suffix.startswith(".t") else "")
            break
    return base or "file"
