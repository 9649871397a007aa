"""What an extract unit costs the database: its write, inside the closing transaction
with the job row locked, is a few set-based statements however many files an archive
holds, and the reuse lookup is one statement for all of a unit's files. Runs a unit in
this process (real Postgres, a real sandbox child) and counts the statements sent."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event, select

from docbatch.schema.db import new_session
from docbatch.schema.settings import get_settings
from docbatch.schema.tables import EXTRACT, Unit
from tests.files import make_html, make_zip


def _upload(api, files) -> str:
    parts = [("file", (name, data)) for name, data in files]
    resp = api.post("/v1/jobs", files=parts, data={"tasks": "summarize"})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _statements(run: Callable[[], Any]) -> int:
    """Statements this process sends while ``run`` runs (an executemany counts once:
    psycopg pipelines it)."""
    sent = [0]

    def count(*_: object) -> None:
        sent[0] += 1

    event.listen(Engine, "before_cursor_execute", count)
    try:
        assert run() == "done"
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    return sent[0]


def _run_extract(job_id: str) -> int:
    from docbatch.worker.extraction import ExtractStage
    from docbatch.worker.runner import UnitRunner

    settings = get_settings()
    with new_session(get_settings()) as s:
        [unit_id] = s.scalars(select(Unit.id).where(Unit.job_id == job_id, Unit.task == EXTRACT))
    runner = UnitRunner(ExtractStage(settings), settings)
    return _statements(lambda: runner.run(unit_id).value)


def test_the_extract_write_is_set_based(api, private_queues):
    """An archive of 300 members cost 4+ statements per member in the closing
    transaction (a document, a blob in two or more, a file row); a unit of 8 files one
    reuse lookup and one text update per file. Now both are a handful in all."""
    from docbatch.worker.extract.expand import close_sandbox
    from docbatch.worker.lease import drop_lease

    run = secrets.token_hex(4)  # unique bytes: nothing is reused from an earlier test

    def archive(n: int) -> bytes:
        return make_zip({f"m{i}.txt": f"Member {i} of run {run}.".encode() for i in range(n)})

    few = _upload(api, [("few.zip", archive(10))])
    many = _upload(api, [("many.zip", archive(300))])
    one = _upload(api, [("one.html", make_html(f"{run}-one"))])
    eight = _upload(api, [(f"f{i}.html", make_html(f"{run}-{i}")) for i in range(8)])
    try:
        _run_extract(_upload(api, [("warm.html", make_html(f"{run}-warm"))]))  # the sandbox
        counts = {job: _run_extract(job) for job in (few, many, one, eight)}
    finally:
        close_sandbox()
        drop_lease()
    for job in (few, many, one, eight):
        api.post(f"/v1/jobs/{job}/cancel")
    extra_members = counts[many] - counts[few]
    # One more batch of members: its documents, its originals looked up, its blobs, its
    # originals shared (stored once per tenant and content: docbatch.domain.originals),
    # its file rows.
    assert extra_members <= 7, f"290 more members cost {extra_members} more statements"
    # Seven more files: each one's blob read, and nothing else per file.
    extra_files = counts[eight] - counts[one]
    assert extra_files <= 7 + 2, f"7 more files cost {extra_files} more statements"
    with new_session(get_settings()) as s:
        members = s.scalars(select(Unit.seq_hi).where(Unit.job_id == many, Unit.task == EXTRACT))
        assert max(members) >= 299  # the 300 members are documents
