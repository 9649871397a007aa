"""Writing result rows: on Postgres, a unit's rows in one statement.

docbatch's connections prepare nothing server-side (``docbatch.schema.db.PLANNING``), so
an executemany of a unit's rows is parsed and planned once per row: 256 plans for a unit
of 256 documents, which doubled Postgres' time per unit on the no-op ceiling
(BENCHMARKS.md). On Postgres the rows go as one ``INSERT ... SELECT FROM unnest(one array
per column)``: one parse and one plan per unit whatever its size, and the plan of an
INSERT of values does not depend on the tables' statistics. SQLite gets an executemany.

A row is a dict of ``results`` columns, stored as an ORM bulk insert stores it: a column
missing from the row, or None, takes the column's default (``created_at`` now, ``reused``
false), else NULL; but None given for a JSON column (``output``, ``params``) is JSON null.
Rows that conflict on (document, task) are skipped (``ON CONFLICT DO NOTHING``)::

    insert_results(session, [{"job_id": j, "document_id": 7, "unit_id": 3, "task": "embed",
                              "status": "succeeded", "output": {"chunks": 1}}])
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from sqlalchemy import JSON
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from docbatch.schema.db import insert_ignore
from docbatch.schema.tables import Result, utcnow

_COLUMNS = [c for c in Result.__table__.columns if c.name != "id"]


@cache
def _unnest_insert() -> str:
    dialect = postgresql.dialect()
    # Arrays of the bare types (VARCHAR, not VARCHAR(40)): a cast would cut a value that is
    # too long, where the INSERT refuses it as an executemany did. Sent in binary: psycopg
    # writes a text array element by element in Python (32 ms for a unit's 256 vectors).
    arrays = ", ".join(
        f"CAST(%({c.name})b AS {re.sub(r'[(].*[)]', '', c.type.compile(dialect=dialect))}[])"
        for c in _COLUMNS
    )
    names = ", ".join(c.name for c in _COLUMNS)
    return f"INSERT INTO results ({names}) SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING"


def insert_results(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` into ``results``, skipping any whose (document, task) has one."""
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(insert_ignore(session, Result), rows)
        return
    defaults = {"created_at": utcnow(), "reused": False}
    arrays: dict[str, list[Any]] = {}
    for column in _COLUMNS:
        name = column.name
        if isinstance(column.type, JSON):  # None given is JSON null, as the ORM wrote it
            arrays[name] = [json.dumps(row[name]) if name in row else None for row in rows]
            continue
        values = [row.get(name) for row in rows]
        if (default := defaults.get(name)) is not None:
            values = [default if v is None else v for v in values]
        arrays[name] = values
    session.connection().exec_driver_sql(_unnest_insert(), arrays)
