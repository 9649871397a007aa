"""Original file bytes, stored once per tenant and content, with a reference count.

Every ``document_files`` row with stored bytes names a blob (``blob_oid``). A tenant's
identical files (the same sha256) share one blob, listed in ``originals`` with ``refs``
= the rows naming it, so a nightly schedule over an unchanged folder stores nothing
new. Content is never shared across tenants: one tenant's upload can tell nothing about
another's. The count moves in the transaction that adds or removes a row, and the blob
is unlinked in the transaction that drops the last reference, so no path leaves an
orphan (``docbatch gc`` removes what a crash left all the same).
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from docbatch.domain import blobs
from docbatch.schema.tables import Original


def release(session: Session, oids: list[int | None]) -> int:
    """Drop one reference per entry of ``oids`` (a blob named twice loses two), unlinking
    each blob whose last reference went; a blob not shared through ``originals`` is
    unlinked at once. Returns how many blobs were unlinked."""
    counts = Counter(int(o) for o in oids if o is not None)
    if not counts:
        return 0
    shared = {
        row.blob_oid: row
        for row in session.execute(
            select(Original.id, Original.blob_oid, Original.refs)
            .where(Original.blob_oid.in_(list(counts)))
            .with_for_update()
        )
    }
    unlink = [oid for oid in counts if oid not in shared]
    gone: list[int] = []
    for oid, row in shared.items():
        left = row.refs - counts[oid]
        if left <= 0:
            gone.append(row.id)
            unlink.append(oid)
        else:
            session.execute(update(Original).where(Original.id == row.id).values(refs=left))
    if gone:
        session.execute(delete(Original).where(Original.id.in_(gone)))
    blobs.delete_many(session, unlink)
    return len(unlink)
