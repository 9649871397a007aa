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

import hashlib
from collections import Counter
from pathlib import Path
from typing import IO, Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from docbatch.domain import blobs
from docbatch.schema.db import insert_ignore
from docbatch.schema.tables import Original, utcnow


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


def _hash(fh: IO[bytes], max_bytes: int) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while block := fh.read(min(blobs.BLOCK, max_bytes + 1 - size)):
        digest.update(block)
        size += len(block)
        if size > max_bytes:
            break
    return size, digest.hexdigest()


def _take(session: Session, tenant: str, sha256: str) -> int | None:
    """One more reference to the tenant's stored copy of ``sha256``; its oid, or None."""
    row = session.execute(
        select(Original.id, Original.blob_oid)
        .where(Original.tenant == tenant, Original.sha256 == sha256)
        .with_for_update()
    ).first()
    if row is None:
        return None
    session.execute(update(Original).where(Original.id == row.id).values(refs=Original.refs + 1))
    return int(row.blob_oid)


def adopt(session: Session, tenant: str, sha256: str, oid: int, size: int) -> int:
    """Share a blob just written as the tenant's copy of ``sha256`` (one reference); when
    another transaction stored the same bytes first, that copy gets the reference and
    this blob is unlinked. Returns the oid to name."""
    created = session.execute(
        insert_ignore(session, Original)
        .values(tenant=tenant, sha256=sha256, blob_oid=oid, bytes=size, refs=1, created_at=utcnow())
        .returning(Original.id)
    ).scalar_one_or_none()
    if created is not None:
        return oid
    shared = _take(session, tenant, sha256)
    assert shared is not None  # the conflicting row committed before ours could insert
    blobs.delete(session, oid)
    return shared


def store(
    session: Session, tenant: str, fh: IO[bytes], max_bytes: int
) -> tuple[int | None, int, str | None]:
    """A file's bytes as the tenant's original: (oid, size, sha256). Bytes the tenant
    stored before are not written again (a seekable file is hashed first). A file over
    ``max_bytes`` is not stored: (None, size read, None)."""
    if fh.seekable():
        start = fh.tell()
        size, sha = _hash(fh, max_bytes)
        if size > max_bytes:
            return None, size, None
        shared = _take(session, tenant, sha)
        if shared is not None:
            return shared, size, sha
        fh.seek(start)
    oid, size, sha = blobs.store(session, fh, max_bytes=max_bytes)
    if size > max_bytes:  # it grew since the caller looked
        blobs.delete(session, oid)
        return None, size, None
    return adopt(session, tenant, sha, oid, size), size, sha


def store_paths(session: Session, tenant: str, paths: list[Path]) -> list[tuple[int, int, str]]:
    """``blobs.store_files`` for the tenant's originals, set-based (a few statements for
    a whole archive): files whose bytes the tenant stored already take a reference to
    that copy, the others are written once per content and shared. (oid, size, sha256)
    per path, in order."""
    if not paths:
        return []
    hashed = []
    for path in paths:
        with path.open("rb") as fh:
            hashed.append(_hash(fh, 1 << 62))
    counts = Counter(sha for _, sha in hashed)
    oids: dict[str, int] = {}
    rows = session.execute(
        select(Original.id, Original.sha256, Original.blob_oid)
        .where(Original.tenant == tenant, Original.sha256.in_(list(counts)))
        .with_for_update()
    ).all()
    _add_refs(session, {r.id: counts[r.sha256] for r in rows})
    oids.update({r.sha256: int(r.blob_oid) for r in rows})
    new: dict[str, int] = {}  # sha256 -> index of its first path
    for i, (_, sha) in enumerate(hashed):
        if sha not in oids:
            new.setdefault(sha, i)
    if new:
        stored = blobs.store_files(session, [paths[i] for i in new.values()])
        now = utcnow()
        values: list[dict[str, Any]] = [
            {
                "tenant": tenant,
                "sha256": sha,
                "blob_oid": oid,
                "bytes": size,
                "refs": counts[sha],
                "created_at": now,
            }
            for sha, (oid, size, _) in zip(new, stored, strict=True)
        ]
        created = set(
            session.scalars(insert_ignore(session, Original).returning(Original.sha256), values)
        )
        for value in values:
            sha = value["sha256"]
            if sha in created:
                oids[sha] = value["blob_oid"]
                continue
            # Another transaction stored the same bytes first: share its copy.
            for _ in range(counts[sha]):
                shared = _take(session, tenant, sha)
            assert shared is not None
            blobs.delete(session, value["blob_oid"])
            oids[sha] = shared
    return [(oids[sha], size, sha) for size, sha in hashed]


def _add_refs(session: Session, added: dict[int, int]) -> None:
    """``refs += n`` for originals ``id -> n``, one statement per distinct n."""
    by_n: dict[int, list[int]] = {}
    for original_id, n in added.items():
        by_n.setdefault(n, []).append(original_id)
    for n, ids in by_n.items():
        session.execute(update(Original).where(Original.id.in_(ids)).values(refs=Original.refs + n))
