"""Configuration is passed in, all the way down: two Settings naming two databases in one
process each run a job, and neither job, nor any of its rows, lands in the other's
database or in the environment's (issue 24 item 2). Before, ``new_session()`` and
``transaction()`` without settings read the cached global, so both met in one URL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from docbatch.domain import jobs, tenants
from docbatch.domain.outbox import unit_of_work
from docbatch.domain.results import iter_result_pages
from docbatch.schema.db import engine_for, new_session
from docbatch.schema.migrate import upgrade
from docbatch.schema.settings import Settings, get_settings
from docbatch.schema.tables import Document, Job
from tests.conftest import ADMIN_URL, RUN_ID
from tests.fakes import UpperHandler


@pytest.fixture
def two_databases(database: str) -> Iterator[list[str]]:
    names = [f"docbatch_test_{RUN_ID}_{side}" for side in ("a", "b")]
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    urls = []
    for name in names:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        urls.append(url)
    try:
        yield urls
    finally:
        from docbatch.worker.lease import drop_lease

        drop_lease()
        for url in urls:
            engine_for(url).dispose()
        with admin.connect() as conn:
            for name in names:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": name},
                )
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def _run_job(settings: Settings, words: str) -> str:
    from docbatch.worker.model_stage import ModelStage
    from docbatch.worker.runner import UnitRunner

    with unit_of_work(settings, publish=False) as s:
        tenants.ensure_tenant(s, "two")
    with unit_of_work(settings, publish=False) as s:
        new = jobs.create_job(
            s,
            settings,
            tenant="two",
            tasks=[{"type": "summarize"}],
            documents=[({"custom_id": "only", "text": words}, None)],
        )
        job_id, unit_ids = new.job.id, new.unit_ids
    handler = UpperHandler(settings.model_for("summarize"))
    handler.setup("cpu")
    runner = UnitRunner(ModelStage(handler, settings), settings)
    for unit_id in unit_ids:
        runner.run(unit_id)
    return job_id


def test_two_settings_with_two_databases_run_a_job_each_in_one_process(two_databases):
    env = get_settings()
    configs = [
        env.model_copy(update={"database_url": url, "queue_prefix": f"two{side}"})
        for url, side in zip(two_databases, "ab", strict=True)
    ]
    jobs_run = [_run_job(configs[0], "alpha text."), _run_job(configs[1], "beta text.")]
    for settings, job_id, other in zip(configs, jobs_run, reversed(jobs_run), strict=True):
        with new_session(settings) as s:
            assert s.scalar(select(Job.status).where(Job.id == job_id)) == "completed"
            assert s.get(Job, other) is None
            assert s.scalar(select(func.count()).select_from(Document)) == 1
        [line] = [
            ln
            for page in iter_result_pages(job_id, ["summarize"], settings=settings)
            for ln in page
        ]
        assert ("ALPHA" if settings is configs[0] else "BETA") in line
    with new_session(env) as s:
        assert s.scalar(select(func.count()).where(Job.id.in_(jobs_run))) == 0
