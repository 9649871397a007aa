"""Large blobs (batch input and output files) as Postgres large objects.

Why Postgres and not a filesystem path: every api replica and worker already reaches
Postgres, so no shared volume is needed; a blob commits or rolls back with the rows
that name it (an upload rejected on line 9,000 leaves nothing behind); and a backup of
the database holds the files too. Large objects are written and read in blocks, so an
upload or a download is never in the api's memory whole. What it costs: the blobs
count against the database's disk; a deployment storing terabytes should put an
object store behind this module's three functions.

Example::

    with transaction() as s:
        oid = create(s)
        write(s, oid, 0, b'{"custom_id": "a"}\\n')
    b"".join(read(oid))
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import text
from sqlalchemy.orm import Session

from schema.db import new_session

BLOCK = 1 << 20


def create(session: Session) -> int:
    """A new empty large object in the session's transaction; returns its oid."""
    return int(session.execute(text("SELECT lo_create(0)")).scalar_one())


def write(session: Session, oid: int, offset: int, data: bytes) -> None:
    params = {"oid": oid, "off": offset, "data": data}
    session.execute(text("SELECT lo_put(:oid, :off, :data)"), params)


def read(oid: int, block: int = BLOCK) -> Iterator[bytes]:
    """The blob's bytes in blocks, each block read in a short transaction of its own."""
    offset = 0
    while True:
        with new_session() as s:
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
    session.execute(text("SELECT lo_unlink(:oid)"), {"oid": oid})
