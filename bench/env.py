"""A private, disposable environment for one benchmark run.

The same approach as tests/conftest.py: a fresh Postgres database
(``docbatch_bench_<random>``) and a Redis db index no other run holds (the test
runs' lock key), set into ``DOCBATCH_*`` before anything imports the settings.
Every process started through :func:`spawn` runs in its own process group and is
stopped, the database dropped and the Redis index flushed when the run ends,
however it ends (normal exit, exception, SIGTERM/SIGINT).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from docbatch import processes
from docbatch.schema.settings import get_settings
from tests.redis_index import Claim, claim_redis_index

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples"  # real text shipped with the repository (examples/README.md)
ADMIN_URL = os.environ.get(
    "DOCBATCH_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("DOCBATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")


class BenchEnv:
    """Creates the database and claims the Redis index; ``close()`` undoes both."""

    def __init__(self, logdir: Path) -> None:
        self.run_id = secrets.token_hex(4)
        self.db_name = f"docbatch_bench_{self.run_id}"
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.redis_index: int | None = None
        self._redis_claim: Claim | None = None
        self.database_url = ""
        self.broker_url = ""
        self.api_key = ""
        self._closed = False

    def open(self) -> BenchEnv:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        self.logdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.close)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.db_name}"'))
        admin.dispose()
        self.database_url = (
            make_url(ADMIN_URL).set(database=self.db_name).render_as_string(hide_password=False)
        )
        self._redis_claim = claim_redis_index(REDIS_URL, self.run_id)
        self.redis_index = self._redis_claim.index
        self.broker_url = f"{REDIS_URL}/{self.redis_index}"
        os.environ.update(
            {
                "DOCBATCH_DATABASE_URL": self.database_url,
                "DOCBATCH_BROKER_URL": self.broker_url,
                "DOCBATCH_REQUEUE_AFTER_SECONDS": "600",
                "DOCBATCH_RUNNING_LEASE_SECONDS": "1800",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
            }
        )
        from docbatch.domain.tenants import create_key
        from docbatch.schema.db import transaction
        from docbatch.schema.migrate import upgrade

        upgrade(self.database_url)
        with transaction(get_settings()) as s:
            self.api_key = create_key(s, "bench").key
        return self

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.close()
        sys.exit(128 + signum)

    def spawn(
        self, args: list[str], log_name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``python ARGS`` in its own process group, logging to the run's folder."""
        proc = processes.spawn([sys.executable, *args], self.logdir / log_name, env, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def log(self, log_name: str) -> str:
        return (self.logdir / log_name).read_text(errors="replace")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for proc in self.procs:
            stop(proc)
        self.procs.clear()
        with contextlib.suppress(Exception):
            from docbatch.schema.db import engine_for

            engine_for.cache_clear()
        if self.redis_index is not None:
            self._redis_claim.release()
            with contextlib.suppress(Exception):
                import redis as redis_lib

                redis_lib.Redis.from_url(self.broker_url).flushdb()
        if self.database_url:
            with contextlib.suppress(Exception):
                from sqlalchemy import create_engine, text

                admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = :db AND pid <> pg_backend_pid()"
                        ),
                        {"db": self.db_name},
                    )
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}"'))
                admin.dispose()


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGINT then SIGTERM the process group, SIGKILL it if it does not stop in ``timeout``
    seconds. SIGINT first lets ``docbatch run`` stop the workers it started (they run in
    their own process groups)."""
    processes.stop(proc, timeout, signals=(signal.SIGINT, signal.SIGTERM))


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached after {timeout}s")


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS = VmHWM) of a process in MB, from /proc."""
    cur = peak = 0.0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {"nproc": str(os.cpu_count()), "cpu": model, "loadavg_at_start": load}
