"""Result reuse, measured: a nightly rerun over an unchanged folder vs the first run.

Writes the stdlib corpus (396 docs) as text files, fires a schedule over the folder
twice with ``docbatch.domain.schedules.fire`` (what the beat tick calls) and processes every
unit in this process with the real tags handler (bundled MiniLM, CPU) through
``docbatch.worker.runner.UnitRunner``, then once more after editing 10 files. Prints wall
time and documents/s side by side. Needs a PostgreSQL server
(DOCBATCH_BENCH_DATABASE_URL, default the local one; a scratch database is created
and dropped); no broker: the units are run here instead of published.

    .venv/bin/python bench/reuse.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
ADMIN = os.environ.get(
    "DOCBATCH_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DB = f"docbatch_bench_{secrets.token_hex(3)}"


def main() -> None:
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{DB}"'))
    os.environ["DOCBATCH_DATABASE_URL"] = (
        make_url(ADMIN).set(database=DB).render_as_string(hide_password=False)
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(ROOT))
    try:
        run()
    finally:
        from docbatch.schema.db import engine_for

        engine_for.cache_clear()
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": DB},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DB}"'))


def run() -> None:
    from docbatch.domain.jobs import job_public
    from docbatch.domain.outbox import unit_of_work
    from docbatch.domain.schedules import create_schedule, fire, next_fire
    from docbatch.schema.db import transaction
    from docbatch.schema.migrate import upgrade
    from docbatch.schema.settings import get_settings
    from docbatch.schema.tables import Schedule, Unit, utcnow
    from docbatch.worker.model_stage import ModelStage
    from docbatch.worker.registry import load_handler
    from docbatch.worker.runner import UnitRunner

    settings = get_settings()
    upgrade(settings.database_url)
    handler = load_handler("tags", settings)
    handler.setup("cpu")
    corpus = ROOT.parent / "shared" / "corpus" / "stdlib-docs.jsonl"
    docs = [json.loads(line) for line in corpus.open(encoding="utf-8")]
    with tempfile.TemporaryDirectory() as folder:
        for i, doc in enumerate(docs):
            (Path(folder) / f"{i:04d}.txt").write_text(doc["text"], encoding="utf-8")
        with transaction(get_settings()) as s:
            schedule = create_schedule(
                s,
                settings,
                "default",
                {
                    "name": "bench",
                    "cron": "0 2 * * *",
                    "source": {"type": "folder", "path": folder},
                    "tasks": ["tags"],
                },
            )
            schedule_id = schedule.id
        night = next_fire("0 2 * * *", utcnow())
        rows = []
        for n, label in enumerate(["first run", "unchanged rerun", "10 files edited"]):
            if n == 2:
                for i in range(10):
                    path = Path(folder) / f"{i * 37:04d}.txt"
                    path.write_text(path.read_text() + " Edited.", encoding="utf-8")
            started = time.perf_counter()
            with unit_of_work(settings, publish=False) as s:  # the units are run here
                schedule = s.get(Schedule, schedule_id)
                firing = fire(s, settings, schedule, night + dt.timedelta(days=n), "bench")
            assert firing is not None and firing.job is not None
            unit_ids = firing.job.unit_ids
            job = firing.job
            runner = UnitRunner(ModelStage(handler, settings), settings)
            for unit_id in unit_ids:
                runner.run(unit_id)
            seconds = time.perf_counter() - started
            with transaction(get_settings()) as s:
                counts = job_public(s, job.job).counts["tags"]
                units = s.scalars(select(Unit.state).where(Unit.job_id == job.job.id)).all()
            assert set(units) == {"done"}, units
            rows.append((label, counts.total, counts.reused, seconds))
    print(f"{'run':<18}{'docs':>6}{'reused':>8}{'computed':>10}{'seconds':>9}{'docs/s':>9}")
    for label, total, reused, seconds in rows:
        print(
            f"{label:<18}{total:>6}{reused:>8}{total - reused:>10}{seconds:>9.2f}"
            f"{total / seconds:>9.1f}"
        )
    first = rows[0][3]
    for label, _t, _r, seconds in rows[1:]:
        print(f"{label}: {first / seconds:.1f}x faster than the first run")


if __name__ == "__main__":
    main()
