"""Run Alembic migrations from code (``docbatch migrate``, the api's prestart, tests)."""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from docbatch.schema.db import make_engine
from docbatch.schema.settings import get_settings

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    return cfg


def wait_for_database(url: str, timeout: float = 60.0) -> None:
    """Block until the database answers (a container may still be starting)."""
    deadline = time.monotonic() + timeout
    engine = make_engine(url)
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    finally:
        engine.dispose()


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
