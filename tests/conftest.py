"""Test harness: a fresh Postgres database and a private Redis db index per run.

Needs a PostgreSQL server (``DOCBATCH_TEST_DATABASE_URL``, default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``; the role must be allowed to
CREATE DATABASE) and a Redis server (``DOCBATCH_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379``). The run creates ``docbatch_test_<random>`` and drops it
at the end, takes a Redis db index no other run holds (tests/redis_index.py) and
flushes it at the end, and stops every process it started.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.redis_index import Claim, claim_redis_index

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get(
    "DOCBATCH_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("DOCBATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
RUN_ID = secrets.token_hex(4)
DB_NAME = f"docbatch_test_{RUN_ID}"


def _fail(what: str, url: str, exc: BaseException) -> None:
    pytest.exit(
        f"docbatch tests need {what} at {url} ({type(exc).__name__}: {exc}). Start it, or point "
        f"{'DOCBATCH_TEST_DATABASE_URL' if what == 'PostgreSQL' else 'DOCBATCH_TEST_REDIS_URL'} "
        "at one.",
        returncode=3,
    )


def _setup() -> tuple[str, Claim]:
    try:
        claim = claim_redis_index(REDIS_URL, RUN_ID)
    except Exception as exc:
        _fail("Redis", REDIS_URL, exc)
    try:
        admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
        admin.dispose()
    except Exception as exc:
        claim.release()
        redis_lib.Redis.from_url(f"{REDIS_URL}/{claim.index}").flushdb()
        _fail("PostgreSQL", ADMIN_URL, exc)
    db_url = make_url(ADMIN_URL).set(database=DB_NAME).render_as_string(hide_password=False)
    return db_url, claim


DATABASE_URL, REDIS_CLAIM = _setup()
REDIS_DB = REDIS_CLAIM.index
BROKER_URL = f"{REDIS_URL}/{REDIS_DB}"
# Set before anything imports the settings or the Celery app.
os.environ.update(
    {
        "DOCBATCH_DATABASE_URL": DATABASE_URL,
        "DOCBATCH_BROKER_URL": BROKER_URL,
        "DOCBATCH_REQUEUE_AFTER_SECONDS": "5",
        "DOCBATCH_RUNNING_LEASE_SECONDS": "600",
        "DOCBATCH_RECONCILE_INTERVAL_SECONDS": "2",
        "DOCBATCH_TORCH_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
)
sys.path.insert(0, str(ROOT))


def _teardown() -> None:
    from docbatch.schema.db import engine_for

    engine_for.cache_clear()
    REDIS_CLAIM.release()
    client = redis_lib.Redis.from_url(BROKER_URL)
    client.flushdb()
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": DB_NAME},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}"'))
    admin.dispose()


pytest_plugins = ["tests.fixtures", "tests.fakeworkers", "tests.storage"]


def pytest_unconfigure(config: pytest.Config) -> None:
    # Runs however the session ends (failures, Ctrl-C, pytest.exit): nothing stays behind.
    from tests.fixtures import stop_all_processes

    stop_all_processes()
    _teardown()


@pytest.fixture(scope="session", autouse=True)
def database() -> str:
    from docbatch.schema.migrate import upgrade

    upgrade(DATABASE_URL)
    return DATABASE_URL
