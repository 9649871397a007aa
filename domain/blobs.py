"""Large blobs (batch input and output files, the original bytes of submitted files) as
Postgres large objects; on SQLite (``docbatch run``), rows of the ``blobs`` table.

Why Postgres and not a filesystem path: every api replica and worker already reaches
Postgres, so no shared volume is needed; a blob commits or rolls back with the rows
that name it (an upload rejected on line 9,000 leaves nothing behind); and a backup of
the database holds the files too. Large objects are written and read in blocks, so an
upload or a download is never in the api's memory whole. What it costs: the blobs
count against the database's disk; a deployment storing terabytes should put an
object store behind this module's three functions.

Example::

    with transaction(settings) as s:
        oid = create(s)
        write(s, oid, 0, b'{"custom_id": "a"}\\n')
    b"".join(read(oid))
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.orm import Session

from docbatch.schema.db import new_session
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Blob

BLOCK = 1 << 20


def _sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def create(session: Session) -> int:
    """A new empty blob in the session's transaction; returns its oid."""
    if _sqlite(session):
        return int(session.execute(insert(Blob).values(data=b"").returning(Blob.oid)).scalar_one())
    return int(session.execute(text("SELECT lo_create(0)")).scalar_one())


def write(session: Session, oid: int, offset: int, data: bytes) -> None:
    if _sqlite(session):
        # Read, splice, write: SQLite blobs are for one machine's `docbatch run`.
        current = session.scalar(select(Blob.data).where(Blob.oid == oid)) or b""
        spliced = current[:offset].ljust(offset, b"\0") + data + current[offset + len(data) :]
        session.execute(update(Blob).where(Blob.oid == oid).values(data=spliced))
        return
    params = {"oid": oid, "off": offset, "data": data}
    session.execute(text("SELECT lo_put(:oid, :off, :data)"), params)


def store(
    session: Session, fh: IO[bytes], max_bytes: int | None = None, block: int = BLOCK
) -> tuple[int, int, str]:
    """Copy a file's bytes into a new blob, a block at a time: (oid, size, sha256 hex).

    With ``max_bytes``, reading stops one byte past it: a returned size over ``max_bytes``
    means the file is bigger (the caller drops the blob)."""
    oid = create(session)
    digest = hashlib.sha256()
    size = 0
    budget = (max_bytes + 1) if max_bytes is not None else None
    if _sqlite(session):
        block = 1 << 40  # one write: every block would rewrite the row
    while data := fh.read(block if budget is None else min(block, budget - size)):
        digest.update(data)
        write(session, oid, size, data)
        size += len(data)
    return oid, size, digest.hexdigest()


def read(oid: int, settings: Settings, block: int = BLOCK) -> Iterator[bytes]:
    """The blob's bytes in blocks, each block read in a short transaction of its own."""
    offset = 0
    while True:
        with new_session(settings) as s:
            if _sqlite(s):
                data = s.scalar(
                    select(func.substr(Blob.data, offset + 1, block)).where(Blob.oid == oid)
                )
            else:
                data = s.execute(
                    text("SELECT lo_get(:oid, :off, :n)"), {"oid": oid, "off": offset, "n": block}
                ).scalar_one()
        if not data:
            return
        yield bytes(data)
        if len(data) < block:
            return
        offset += len(data)


def delete(session: Session, oid: int) -> None:
    if _sqlite(session):
        session.execute(sql_delete(Blob).where(Blob.oid == oid))
        return
    session.execute(text("SELECT lo_unlink(:oid)"), {"oid": oid})


# Small files go into blobs many to a statement, up to this many bytes at once.
BATCH_BYTES = 8 << 20


def store_files(session: Session, paths: list[Path]) -> list[tuple[int, int, str]]:
    """Each file's bytes into a new blob, in the session's transaction: (oid, size, sha256
    hex) per path, in order. Files under a block go many to a statement (one round trip
    for a whole archive of small members); a bigger one streams a block at a time."""
    out: dict[int, tuple[int, int, str]] = {}
    small: list[tuple[int, bytes]] = []
    pending = 0

    def flush() -> None:
        nonlocal pending
        if small:
            oids = _create_many(session, [data for _, data in small])
            for (i, data), oid in zip(small, oids, strict=True):
                out[i] = (oid, len(data), hashlib.sha256(data).hexdigest())
            small.clear()
            pending = 0

    for i, path in enumerate(paths):
        if path.stat().st_size >= BLOCK:
            with path.open("rb") as fh:
                out[i] = store(session, fh)
            continue
        data = path.read_bytes()
        small.append((i, data))
        pending += len(data)
        if pending >= BATCH_BYTES:
            flush()
    flush()
    return [out[i] for i in range(len(paths))]


def _create_many(session: Session, datas: list[bytes]) -> list[int]:
    if _sqlite(session):
        return [
            int(session.execute(insert(Blob).values(data=d).returning(Blob.oid)).scalar_one())
            for d in datas
        ]
    rows = session.execute(
        text(
            "SELECT lo_from_bytea(0, d) FROM unnest(CAST(:datas AS bytea[])) "
            "WITH ORDINALITY AS t(d, n) ORDER BY n"
        ),
        {"datas": datas},
    ).scalars()
    return [int(oid) for oid in rows]


def delete_many(session: Session, oids: list[int]) -> None:
    """``delete`` for many blobs, in one statement."""
    if not oids:
        return
    if _sqlite(session):
        session.execute(sql_delete(Blob).where(Blob.oid.in_(oids)))
        return
    session.execute(
        text("SELECT lo_unlink(CAST(o AS oid)) FROM unnest(CAST(:oids AS bigint[])) AS t(o)"),
        {"oids": oids},
    )
