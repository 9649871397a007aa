"""Load test: N concurrent clients submit small jobs and poll them for a fixed time.

Each client loops: POST /v1/jobs (5 short documents, task summarize) -> GET the job every
--poll-every seconds (default 1, like `docbatch submit --wait`) until it ends -> GET its
results -> again. Every request's latency is recorded;
an error is any exception or non-2xx answer. Prints requests/s, p50/p95/p99 and errors,
per kind of request and overall.

Against a running api (you bring api, workers and a key)::

    python bench/load.py --url http://127.0.0.1:8000 --key dbk_... --clients 50 --seconds 60

Or self-contained (--spawn): creates a scratch Postgres database, starts a private
redis-server, `docbatch api` (uvicorn, --api-workers processes) and one `docbatch worker`
with the fake handler tests.fakes:UpperHandler (upper-cases text, no model), runs the
load, then stops and drops everything::

    python bench/load.py --spawn --clients 50 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled"}


class Stats:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.samples: list[str] = []
        self.jobs_done = 0

    async def call(self, kind: str, coro: object) -> httpx.Response | None:
        start = time.perf_counter()
        try:
            resp = await coro  # type: ignore[misc]
        except httpx.HTTPError as exc:
            self.latency[kind].append(time.perf_counter() - start)
            self._error(kind, f"{type(exc).__name__}: {exc}")
            return None
        self.latency[kind].append(time.perf_counter() - start)
        if not resp.is_success:
            self._error(kind, f"HTTP {resp.status_code}: {resp.text[:200]}")
            return None
        return resp

    def _error(self, kind: str, what: str) -> None:
        self.errors[kind] += 1
        if len(self.samples) < 5:
            self.samples.append(f"{kind}: {what}")


async def client_loop(
    http: httpx.AsyncClient, stats: Stats, stop_at: float, n: int, poll_every: float
) -> None:
    seq = 0
    while time.monotonic() < stop_at:
        seq += 1
        docs = [
            {"custom_id": f"c{n}-{seq}-{i}", "text": f"client {n} job {seq} document {i}"}
            for i in range(5)
        ]
        body = {"tasks": ["summarize"], "documents": docs}
        resp = await stats.call("submit", http.post("/v1/jobs", json=body))
        if resp is None:
            await asyncio.sleep(0.25)
            continue
        job_id = resp.json()["id"]
        while time.monotonic() < stop_at:
            await asyncio.sleep(poll_every)
            resp = await stats.call("poll", http.get(f"/v1/jobs/{job_id}"))
            if resp is not None and resp.json()["status"] in TERMINAL:
                stats.jobs_done += 1
                await stats.call("results", http.get(f"/v1/jobs/{job_id}/results"))
                break


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run_load(url: str, key: str, clients: int, seconds: float, poll_every: float) -> Stats:
    stats = Stats()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30, limits=limits
    ) as http:
        stop_at = time.monotonic() + seconds
        await asyncio.gather(
            *(client_loop(http, stats, stop_at, n, poll_every) for n in range(clients))
        )
    return stats


def report(stats: Stats, seconds: float, clients: int) -> None:
    total = sum(len(v) for v in stats.latency.values())
    print(
        f"{clients} clients for {seconds:.0f} s: {total} requests, "
        f"{total / seconds:.1f} requests/s, {stats.jobs_done} jobs finished"
    )
    print(
        f"{'request':<8} {'count':>7} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8} {'errors':>6}"
    )
    everything: list[float] = []
    for kind in ("submit", "poll", "results"):
        lat = stats.latency.get(kind, [])
        everything += lat
        if lat:
            print(
                f"{kind:<8} {len(lat):>7} {len(lat) / seconds:>7.1f} {pct(lat, 0.5):>8.1f} "
                f"{pct(lat, 0.95):>8.1f} {pct(lat, 0.99):>8.1f} {max(lat) * 1000:>8.1f} "
                f"{stats.errors.get(kind, 0):>6}"
            )
    if everything:
        print(
            f"{'all':<8} {len(everything):>7} {len(everything) / seconds:>7.1f} "
            f"{pct(everything, 0.5):>8.1f} {pct(everything, 0.95):>8.1f} "
            f"{pct(everything, 0.99):>8.1f} {max(everything) * 1000:>8.1f} "
            f"{sum(stats.errors.values()):>6}"
        )
        print(f"mean {statistics.fmean(everything) * 1000:.1f} ms")
    for sample in stats.samples:
        print("  error:", sample)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"api at {url} did not come up")


def spawn_stack(stack: ExitStack, args: argparse.Namespace) -> tuple[str, str]:
    """Scratch database + private redis + api + fake worker; returns (url, key)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin_url = os.environ.get(
        "DOCBATCH_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    db_name = f"docbatch_bench_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()

    stack.callback(drop)
    db_url = make_url(admin_url).set(database=db_name).render_as_string(hide_password=False)
    redis_port = _free_port()
    logs = Path(tempfile.mkdtemp(prefix="docbatch-bench-"))
    procs: list[subprocess.Popen[bytes]] = []

    def stop_all() -> None:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    stack.callback(stop_all)
    procs.append(
        subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=(logs / "redis.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
    )
    env = {
        **os.environ,
        "DOCBATCH_DATABASE_URL": db_url,
        "DOCBATCH_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "DOCBATCH_MODELS__SUMMARIZE__HANDLER": "tests.fakes:UpperHandler",
        "PYTHONPATH": str(ROOT),
    }
    cli = [sys.executable, "-m", "docbatch.cli"]
    subprocess.run([*cli, "migrate"], env=env, cwd=ROOT, check=True)
    key = subprocess.run(
        [*cli, "keys", "create", "--tenant", "bench"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = _free_port()
    procs.append(
        subprocess.Popen(
            [*cli, "api", "--port", str(port), "--workers", str(args.api_workers)],
            env=env,
            cwd=ROOT,
            stdout=(logs / "api.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
    )
    for i in range(args.workers):
        procs.append(
            subprocess.Popen(
                [*cli, "worker", "--task", "summarize", "--loglevel", "WARNING"],
                env=env,
                cwd=ROOT,
                stdout=(logs / f"worker{i}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
    url = f"http://127.0.0.1:{port}"
    _wait_http(url)
    print(
        f"spawned: api ({args.api_workers} uvicorn workers) on {url}, {args.workers} fake "
        f"summarize worker(s) (tests.fakes:UpperHandler), database {db_name}, "
        f"redis :{redis_port}; logs in {logs}"
    )
    return url, key


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default=os.environ.get("DOCBATCH_API_URL", "http://127.0.0.1:8000"))
    p.add_argument("--key", default=os.environ.get("DOCBATCH_API_KEY", ""))
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument(
        "--poll-every", type=float, default=1.0, help="seconds between polls (the CLI uses 1)"
    )
    p.add_argument("--spawn", action="store_true", help="start a private stack (see above)")
    p.add_argument("--api-workers", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="fake summarize workers (--spawn)")
    args = p.parse_args()
    with ExitStack() as stack:
        url, key = spawn_stack(stack, args) if args.spawn else (args.url, args.key)
        print(
            f"poll every {args.poll_every} s; {os.cpu_count()} cpus, "
            f"load average {os.getloadavg()[0]:.2f} at start"
        )
        stats = asyncio.run(run_load(url, key, args.clients, args.seconds, args.poll_every))
        report(stats, args.seconds, args.clients)
        print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
