"""Test harness: a fresh Postgres database and a private Redis db index per run, set up
only when a selected test needs them.

Tests marked ``fast`` need no server. A run that selects only those (``make test-fast``,
``pytest -m fast``, ``pytest tests/test_chunking.py``) never connects to Postgres or Redis.
If any selected test is not ``fast``, the run sets both up once, before its first test
(``servers()``, from the autouse session fixture): it needs a PostgreSQL server
(``DOCBATCH_TEST_DATABASE_URL``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``;
the role must be allowed to CREATE DATABASE) and a Redis server (``DOCBATCH_TEST_REDIS_URL``,
default ``redis://127.0.0.1:6379``). It creates ``docbatch_test_<random>`` and drops it at
the end, takes a Redis db index no other run holds (tests/redis_index.py) and flushes it at
the end, and stops every process it started.

A new test that needs neither server carries ``@pytest.mark.fast`` (or a module's
``pytestmark = pytest.mark.fast``); one that does needs nothing: servers are the default.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
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
# The database's name is known before it exists; the Redis db index is not, so until the
# servers are set up the broker URL names no host (.invalid never resolves): a fast test
# that reached for the broker fails at once instead of touching someone's db 0.
DATABASE_URL = make_url(ADMIN_URL).set(database=DB_NAME).render_as_string(hide_password=False)
UNCLAIMED_BROKER_URL = "redis://docbatch-tests-unclaimed.invalid:6379/0"

# Set before anything imports the settings or the Celery app.
os.environ.update(
    {
        "DOCBATCH_DATABASE_URL": DATABASE_URL,
        "DOCBATCH_BROKER_URL": UNCLAIMED_BROKER_URL,
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


@dataclass(frozen=True)
class Servers:
    """The run's database (created and migrated) and its claimed Redis db index."""

    database_url: str
    broker_url: str
    redis: Claim


_servers: Servers | None = None


def _fail(what: str, url: str, exc: BaseException) -> None:
    pytest.exit(
        f"docbatch tests need {what} at {url} ({type(exc).__name__}: {exc}). Start it, or point "
        f"{'DOCBATCH_TEST_DATABASE_URL' if what == 'PostgreSQL' else 'DOCBATCH_TEST_REDIS_URL'} "
        "at one, or run only the tests that need no server (make test-fast).",
        returncode=3,
    )


def servers() -> Servers:
    """The run's servers, set up on the first call: a Redis db index claimed, the database
    created and migrated, and this process's settings and Celery app pointed at them."""
    global _servers
    if _servers is not None:
        return _servers
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
    # Recorded at once: from here on the teardown has a database to drop.
    _servers = Servers(DATABASE_URL, f"{REDIS_URL}/{claim.index}", claim)
    _point_this_process_at(_servers.broker_url)

    from docbatch.schema.migrate import upgrade

    upgrade(DATABASE_URL)
    return _servers


def _point_this_process_at(broker_url: str) -> None:
    # Test modules imported at collection may have built the Celery app (domain/broker.py
    # makes it at import) and cached the settings with the unclaimed URL; nothing has
    # connected yet, so pointing both at the claimed index is enough. Processes a test
    # starts read the environment.
    os.environ["DOCBATCH_BROKER_URL"] = broker_url
    from docbatch.schema.settings import get_settings

    get_settings.cache_clear()
    broker = sys.modules.get("docbatch.domain.broker")
    if broker is not None:
        broker.app.conf.broker_url = broker_url


def _teardown(run: Servers) -> None:
    from docbatch.schema.db import engine_for

    engine_for.cache_clear()
    run.redis.release()
    client = redis_lib.Redis.from_url(run.broker_url)
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
    if _servers is not None:
        _teardown(_servers)


@pytest.fixture(scope="session", autouse=True)
def _servers_when_needed(request: pytest.FixtureRequest) -> None:
    """Sets the servers up before the first test when any selected test is not ``fast``.
    Session-scoped and autouse, so it runs before every other session fixture (the api,
    the workers) whichever test comes first."""
    if any(item.get_closest_marker("fast") is None for item in request.session.items):
        servers()


@pytest.fixture(scope="session")
def database() -> str:
    """The run's database URL (created and migrated)."""
    return servers().database_url


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The run's Redis db index as a broker URL."""
    return servers().broker_url
