"""How many units per second Postgres closes: the database side of a worker, measured.

Runs ``docbatch.worker.runner.UnitRunner`` (lease, claim, cancel check, write results,
close, in the real transactions; each writer thread its own lease connection, as each
worker process has) with a handler that returns embed-sized outputs instantly, so
only the database work is timed. Side by side: one job shared by all writers (every
close takes that job's row lock) versus one job per writer, at 1 and 4 writers.

    .venv/bin/python bench/ledger_rate.py [--units 200] [--docs-per-unit 8]

Uses a scratch database on DOCBATCH_TEST_DATABASE_URL's server (created and dropped).
Threads of one process on a shared 2-core machine: a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ADMIN_URL = os.environ.get(
    "DOCBATCH_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
CHUNKS_PER_DOC = 4  # a 1,000-token document in 256-token MiniLM chunks


def make_handler() -> Any:
    from docbatch.schema.settings import ModelConfig
    from docbatch.worker.chunking import Chunk
    from docbatch.worker.handlers.base import Handler, Output
    from tests.fakes import WordTokenizer

    class InstantEmbed(Handler):
        """Embed-shaped output (4 chunk vectors + pooled, float32 x 384) with no model."""

        task = "embed"
        default_model = "bench/instant"

        def setup(self, device: str) -> None:
            self.tokenizer = WordTokenizer()

        def chunk(self, text: str) -> list[Chunk]:
            return [Chunk(0, len(text), text, 250) for _ in range(CHUNKS_PER_DOC)]

        def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
            return [None] * len(chunks)

        def reduce(self, text: str, chunks: list[Chunk], outputs: list[Any], params: Any):
            vectors = np.random.default_rng(len(text)).random((len(chunks) + 1, 384))
            return Output({"dim": 384, "chunks": len(chunks)}, vectors.astype(np.float32))

    handler = InstantEmbed(ModelConfig())
    handler.setup("cpu")
    return handler


def create_jobs(n_jobs: int, units_per_job: int, docs_per_unit: int) -> list[list[int]]:
    from docbatch.domain import jobs
    from docbatch.domain.outbox import unit_of_work
    from docbatch.schema.settings import get_settings

    settings = get_settings()
    text_doc = "word " * 800  # ~4,000 characters: 1,000 estimated tokens
    out = []
    for j in range(n_jobs):
        docs = (
            ({"custom_id": f"d{i}", "text": text_doc + str(i)}, None)
            for i in range(units_per_job * docs_per_unit)
        )
        with unit_of_work(settings, publish=False) as s:  # the units are run here
            new = jobs.create_job(
                s,
                settings,
                tenant="bench",
                tasks=[{"type": "embed"}],
                documents=docs,
                name=f"bench-{j}",
            )
            out.append(new.unit_ids)
    return out


def run(writers: int, unit_lists: list[list[int]], handler: Any) -> float:
    from docbatch.schema.settings import get_settings
    from docbatch.worker.lease import Lease
    from docbatch.worker.model_stage import ModelStage
    from docbatch.worker.runner import UnitRunner

    settings = get_settings().model_copy(update={"worker_claim_ahead": False})
    stage = ModelStage(handler, settings)
    pending = [u for units in zip(*unit_lists, strict=False) for u in units]  # interleave jobs
    lock = threading.Lock()
    done = []

    def work() -> None:
        lease = Lease(settings)
        runner = UnitRunner(stage, settings, holder=lease)
        try:
            while True:
                with lock:
                    if not pending:
                        return
                    unit_id = pending.pop(0)
                done.append(runner.run(unit_id))
        finally:
            lease.close()

    threads = [threading.Thread(target=work) for _ in range(writers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    assert set(done) == {"done"}, set(done)
    return len(done) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=120, help="units per configuration")
    parser.add_argument("--docs-per-unit", type=int, default=8)
    args = parser.parse_args()

    name = f"docbatch_bench_{secrets.token_hex(4)}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    os.environ["DOCBATCH_DATABASE_URL"] = url
    os.environ["DOCBATCH_UNIT_TOKENS"] = str(1000 * args.docs_per_unit)
    try:
        from docbatch.schema.migrate import upgrade

        upgrade(url)
        handler = make_handler()
        print(f"units of {args.docs_per_unit} documents x embed (5 vectors of 384 float32 each);")
        print(f"{args.units} units per row; units closed per second (and documents per second)")
        print(f"{'writers':>8}{'one shared job':>22}{'a job per writer':>22}{'ratio':>7}")
        for writers in (1, 4):
            shared = run(writers, create_jobs(1, args.units, args.docs_per_unit), handler)
            per = run(
                writers,
                create_jobs(writers, args.units // writers, args.docs_per_unit),
                handler,
            )
            d = args.docs_per_unit
            print(
                f"{writers:>8}{shared:>9.1f} ({shared * d:>7.0f} docs)"
                f"{per:>9.1f} ({per * d:>7.0f} docs){per / shared:>7.2f}"
            )
    finally:
        from docbatch.schema.db import engine_for

        engine_for.cache_clear()
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


if __name__ == "__main__":
    main()
