"""The fixed cost of a unit in Postgres round trips: a chain of units run by the real
runner (claim ahead, write and close, outbox top-ups) on the real database, every
statement, transaction start and pooled-connection check-out counted per unit.

On a shared or remote database each round trip is a context switch or a network hop,
paid per unit at every scale (issue 25); this keeps the count from creeping back up."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, event
from sqlalchemy.pool import Pool

from docbatch.domain import jobs
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.settings import Settings, get_settings
from docbatch.worker.model_stage import ModelStage
from docbatch.worker.runner import UnitRunner
from tests.fakes import UpperHandler
from tests.fixtures import load_corpus


@contextmanager
def counted() -> Iterator[Counter[str]]:
    """Counts, on every engine of this process: statements by their first words, a
    transaction's BEGIN and its COMMIT or ROLLBACK (round trips of their own) and
    ``checkout`` (a pooled connection's pre-ping)."""
    seen: Counter[str] = Counter()

    def statement(conn, cursor, sql, params, context, executemany) -> None:  # noqa: ANN001
        seen["statements"] += 1
        words = " ".join(sql.split()[:3]).upper()
        seen[f"sql: {words}"] += 1

    def begin(conn) -> None:  # noqa: ANN001
        seen["begin"] += 1

    def end(conn) -> None:  # noqa: ANN001
        seen["commit or rollback"] += 1

    def checkout(dbapi_conn, record, proxy) -> None:  # noqa: ANN001
        seen["checkout"] += 1

    event.listen(Engine, "before_cursor_execute", statement)
    event.listen(Engine, "begin", begin)
    event.listen(Engine, "commit", end)
    event.listen(Engine, "rollback", end)
    event.listen(Pool, "checkout", checkout)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", statement)
        event.remove(Engine, "begin", begin)
        event.remove(Engine, "commit", end)
        event.remove(Engine, "rollback", end)
        event.remove(Pool, "checkout", checkout)


def _settings() -> Settings:
    return get_settings().model_copy(
        update={
            "queue_prefix": f"trips-{secrets.token_hex(3)}",
            "unit_max_documents": 4,
            "worker_overlap": "inline",
            "worker_claim_ahead": True,
        }
    )


def _round_trips(units: int) -> tuple[float, Counter[str]]:
    """Round trips per unit over a chain of ``units`` units (the message's unit claimed
    alone, the rest claimed ahead), and what they were."""
    settings = _settings()
    handler = UpperHandler(get_settings().model_for("summarize"))
    handler.setup("cpu")
    docs = load_corpus("stdlib-docs.jsonl", 4 * units)
    with unit_of_work(settings, publish=False) as s:
        new = jobs.create_job(
            s,
            settings,
            tenant="default",
            tasks=[{"type": "summarize"}],
            documents=((d, None) for d in docs),
        )
    assert len(new.unit_ids) == units
    runner = UnitRunner(ModelStage(handler, settings), settings)
    with counted() as seen:
        assert runner.run(new.unit_ids[0]) == "done"
    trips = seen["statements"] + seen["begin"] + seen["commit or rollback"] + seen["checkout"]
    return trips / units, seen


def test_a_chained_unit_costs_few_round_trips():
    """57.8 a unit before the top-up asked first whether its queue had room (2026-12-07),
    48.8 after; ``pytest -s`` prints what they are."""
    per_unit, seen = _round_trips(12)
    print(f"round trips per unit {per_unit:.1f}")
    for what, n in sorted(seen.items(), key=lambda kv: -kv[1]):
        print(f"{n / 12:6.2f}  {what}")
    assert per_unit <= 54, seen
    # While the chain runs the queue stays full: no top-up transaction after each commit
    # (only at the job's end, when the claims take the units sent with messages).
    assert seen["sql: SELECT PG_ADVISORY_XACT_LOCK(%(NS)S, %(KEY)S)"] <= 12 + 8, seen
