"""Real server processes for the ops tests: `docbatch api` under uvicorn, Flower, beat.

Every process is registered with tests.fixtures so the session stops it whatever
happens; each listens on a free port and logs to test-artifacts/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import httpx

from docbatch.processes import free_port
from docbatch.processes import spawn as spawn_process
from tests.fixtures import ARTIFACTS, _processes, spawn, stop_process


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes],
    log_name: str,
    timeout: float = 120,
    auth: tuple[str, str] | None = None,
    status: int = 200,
) -> httpx.Response:
    """Poll ``url`` until it answers ``status``; fail early if the process died."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{log_name} exited:\n{log_tail(log_name)}")
        try:
            last = httpx.get(url, auth=auth, timeout=5)
            if last.status_code == status:
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.3)
    raise TimeoutError(
        f"{url} not answering {status} after {timeout}s ({last}):\n{log_tail(log_name)}"
    )


def log_tail(log_name: str, chars: int = 3000) -> str:
    path = ARTIFACTS / log_name
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


class ApiProcess:
    """``docbatch api [--migrate]`` as a real uvicorn server on a free port."""

    def __init__(self, env: dict[str, str], migrate: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_name = f"api-{self.port}.log"
        args = ["api", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = spawn(args + (["--migrate"] if migrate else []), self.log_name, env)

    def wait_ready(self, timeout: float = 120) -> ApiProcess:
        wait_http(f"{self.url}/readyz", self.proc, self.log_name, timeout)
        return self

    def stop(self) -> None:
        stop_process(self.proc)


class FlowerProcess:
    """``celery --broker=URL flower`` (no app import), as docker-compose.yml runs it."""

    def __init__(self, broker: str, basic_auth: str | None, extra: list[str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_name = f"flower-{self.port}.log"
        ARTIFACTS.mkdir(exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "celery",
            f"--broker={broker}",
            "flower",
            f"--port={self.port}",
            "--address=127.0.0.1",
            "--max_tasks=10000",
            *(extra or []),
        ]
        # Credentials from the environment, as docker-compose.yml passes them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
        if basic_auth:
            env["FLOWER_BASIC_AUTH"] = basic_auth
        self.proc = spawn_process(args, ARTIFACTS / self.log_name, env, inherit_env=False)
        _processes.append(self.proc)

    def wait_ready(self, timeout: float = 60) -> FlowerProcess:
        wait_http(f"{self.url}/healthcheck", self.proc, self.log_name, timeout)
        return self

    def stop(self) -> None:
        stop_process(self.proc)


class WebhooksProcess:
    """``docbatch webhooks``: the process that sends webhook deliveries (runs no model)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.log_name = f"webhooks-{time.monotonic_ns()}.log"
        self.proc = spawn(["webhooks", "--loglevel", "INFO"], self.log_name, env)

    @property
    def log(self) -> str:
        return log_tail(self.log_name, 10**7)

    def wait_ready(self, timeout: float = 60) -> WebhooksProcess:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docbatch webhooks exited:\n{self.log[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"docbatch webhooks not ready:\n{self.log[-3000:]}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        stop_process(self.proc)


class RedisServer:
    """A private redis-server (no persistence) that a test may stop, start and flush."""

    def __init__(self, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        log = (ARTIFACTS / f"redis-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _processes.append(self.proc)
        deadline = time.monotonic() + 30
        while self.cli("PING") != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cli(self, *args: str) -> str:
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *auth, *args], capture_output=True, text=True
        )
        return out.stdout.strip()


def terminate_backends(database: str) -> int:
    """pg_terminate_backend every connection to ``database`` but this one (never another
    database's: other test runs share the server); returns how many."""
    from sqlalchemy import create_engine, text

    from tests.conftest import ADMIN_URL

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                ).all()
            )
    finally:
        admin.dispose()
