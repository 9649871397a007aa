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

Side by side in one run: ``--baseline /work/main`` first runs the same load against the
api of another checkout (same database, redis and worker), and ``--api-workers 1 2``
runs a phase per api process count; a table at the end compares the phases, with the
api's and the load generator's CPU per request::

    python bench/load.py --spawn --seconds 15 --baseline /work/main --api-workers 1 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from docbatch.processes import free_port
from docbatch.schema.tables import TERMINAL_JOB_STATUSES

ROOT = Path(__file__).resolve().parents[1]


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
            self.samples.append(f"{time.strftime('%H:%M:%S')} {kind}: {what}")


async def client_loop(
    http: httpx.AsyncClient,
    stats: Stats,
    stop_at: float,
    n: int,
    poll_every: float,
    poll_only: bool = False,
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
            if (
                resp is not None
                and resp.json()["status"] in TERMINAL_JOB_STATUSES
                and not poll_only
            ):
                stats.jobs_done += 1
                await stats.call("results", http.get(f"/v1/jobs/{job_id}/results"))
                break


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run_load(
    url: str, key: str, clients: int, seconds: float, poll_every: float, poll_only: bool = False
) -> Stats:
    stats = Stats()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30, limits=limits
    ) as http:
        stop_at = time.monotonic() + seconds
        await asyncio.gather(
            *(client_loop(http, stats, stop_at, n, poll_every, poll_only) for n in range(clients))
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


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"api at {url} exited at start")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"api at {url} did not come up")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Stack:
    """Scratch database + private redis + fake worker(s), shared by every phase; each phase
    starts its own api (from a checkout, with a number of uvicorn processes)."""

    def __init__(self, stack: ExitStack, args: argparse.Namespace) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        admin_url = os.environ.get(
            "DOCBATCH_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        )
        self.db_name = f"docbatch_bench_{secrets.token_hex(4)}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.db_name}"'))

        def drop() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
            admin.dispose()

        stack.callback(drop)
        db_url = (
            make_url(admin_url).set(database=self.db_name).render_as_string(hide_password=False)
        )
        redis_port = free_port()
        self.logs = Path(tempfile.mkdtemp(prefix="docbatch-bench-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        stack.callback(self.stop_all)
        self.procs.append(
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
                stdout=(self.logs / "redis.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
        self.env = {
            **os.environ,
            "DOCBATCH_DATABASE_URL": db_url,
            "DOCBATCH_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
            "DOCBATCH_MODELS__SUMMARIZE__HANDLER": "tests.fakes:UpperHandler",
            "PYTHONPATH": str(ROOT),
        }
        cli = [sys.executable, "-m", "docbatch.cli"]
        subprocess.run([*cli, "migrate"], env=self.env, cwd=ROOT, check=True)
        self.key = subprocess.run(
            [*cli, "keys", "create", "--tenant", "bench"],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for i in range(args.workers):
            self.procs.append(
                subprocess.Popen(
                    [*cli, "worker", "--task", "summarize", "--loglevel", "WARNING"],
                    env=self.env,
                    cwd=ROOT,
                    stdout=(self.logs / f"worker{i}.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        print(
            f"spawned: {args.workers} fake summarize worker(s) (tests.fakes:UpperHandler), "
            f"database {self.db_name}, redis :{redis_port}; logs in {self.logs}"
        )

    def start_api(self, checkout: Path, processes: int, name: str) -> tuple[str, Any]:
        """``docbatch api`` of ``checkout`` (its cwd decides which code ``-m`` imports)."""
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "docbatch.cli", "api", "--port", str(port)]
            + ["--workers", str(processes)],
            env={**self.env, "PYTHONPATH": str(checkout)},
            cwd=checkout,
            stdout=(self.logs / f"api-{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        _wait_http(url, proc)
        return url, proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)


def _tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (uvicorn's worker processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def _machine_busy() -> tuple[float, float]:
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    idle = v[3] + v[4]
    return float(sum(v) - idle), float(sum(v))


def run_phase(url: str, key: str, args: argparse.Namespace, api_pid: int | None) -> dict[str, Any]:
    api_cpu0 = _tree_cpu_seconds(api_pid) if api_pid else 0.0
    own0 = time.process_time()
    busy0, all0 = _machine_busy()
    stats = asyncio.run(
        run_load(url, key, args.clients, args.seconds, args.poll_every, args.poll_only)
    )
    busy1, all1 = _machine_busy()
    requests = sum(len(v) for v in stats.latency.values())
    out: dict[str, Any] = {"stats": stats, "requests": requests}
    out["machine_busy"] = (busy1 - busy0) / max(all1 - all0, 1.0)
    out["loadgen_cpu_ms"] = 1000 * (time.process_time() - own0) / max(requests, 1)
    if api_pid:
        out["api_cpu_ms"] = 1000 * (_tree_cpu_seconds(api_pid) - api_cpu0) / max(requests, 1)
    return out


def _api_trouble(log: Path) -> None:
    """Print what the api logged besides requests: a restarted uvicorn process (its health
    check timed out) or a traceback explains an error the clients saw."""
    lines = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if any(w in line for w in ("died", "Traceback", "ERROR", "Killed", "hung", "Child process"))
    ]
    if lines:
        print(f"  api log ({log}): {len(lines)} line(s) of trouble, first: {lines[:3]}")


def side_by_side(phases: list[tuple[str, dict[str, Any]]], seconds: float) -> None:
    print("\nside by side (same database, redis and worker; one phase after the other):")
    head = (
        f"{'phase':<26} {'req/s':>6} {'poll p50':>8} {'poll p99':>8} {'all p50':>8} "
        f"{'all p95':>8} {'all p99':>8} {'errors':>6} {'api ms/req':>10} {'loadgen ms/req':>14} "
        f"{'cpu busy':>8}"
    )
    print(head)
    for name, out in phases:
        stats: Stats = out["stats"]
        everything = [x for v in stats.latency.values() for x in v] or [0.0]
        poll = stats.latency.get("poll") or [0.0]
        api_ms = out.get("api_cpu_ms")
        print(
            f"{name:<26} {out['requests'] / seconds:>6.1f} {pct(poll, 0.5):>8.1f} "
            f"{pct(poll, 0.99):>8.1f} {pct(everything, 0.5):>8.1f} {pct(everything, 0.95):>8.1f} "
            f"{pct(everything, 0.99):>8.1f} {sum(stats.errors.values()):>6} "
            f"{'-' if api_ms is None else f'{api_ms:.2f}':>10} {out['loadgen_cpu_ms']:>14.2f} "
            f"{out['machine_busy']:>8.0%}"
        )
    print("(latencies in ms; api/loadgen ms/req: CPU per request; cpu busy: whole machine)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default=os.environ.get("DOCBATCH_API_URL", "http://127.0.0.1:8000"))
    p.add_argument("--key", default=os.environ.get("DOCBATCH_API_KEY", ""))
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument(
        "--poll-every", type=float, default=1.0, help="seconds between polls (the CLI uses 1)"
    )
    p.add_argument(
        "--poll-only",
        action="store_true",
        help="each client submits one job, then only polls it (isolates the poll's cost)",
    )
    p.add_argument("--spawn", action="store_true", help="start a private stack (see above)")
    p.add_argument(
        "--api-workers",
        type=int,
        nargs="+",
        default=[2],
        help="uvicorn processes of the api; several values run one phase each (--spawn)",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. /work/main): its api runs the same load first (--spawn)",
    )
    p.add_argument("--workers", type=int, default=1, help="fake summarize workers (--spawn)")
    args = p.parse_args()
    print(
        f"{args.clients} clients, poll every {args.poll_every} s, {args.seconds:.0f} s per "
        f"phase; {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} at start"
    )
    phases: list[tuple[str, dict[str, Any]]] = []
    with ExitStack() as stack:
        if not args.spawn:
            out = run_phase(args.url, args.key, args, None)
            report(out["stats"], args.seconds, args.clients)
            return
        infra = Stack(stack, args)
        checkouts = [("baseline", args.baseline)] if args.baseline else []
        checkouts.append(("this", ROOT))
        # Interleaved (A B, then B A for the next process count) so a machine that gets busier
        # during the run does not favour one checkout.
        for i, n in enumerate(args.api_workers):
            for label, checkout in checkouts if i % 2 == 0 else checkouts[::-1]:
                name = f"{label}, {n} api process{'es' if n > 1 else ''}"
                url, proc = infra.start_api(checkout, n, f"{label}-{n}")
                print(f"\n== {name} ({checkout}) on {url}", flush=True)
                out = run_phase(url, infra.key, args, proc.pid)
                _stop(proc)
                report(out["stats"], args.seconds, args.clients)
                _api_trouble(infra.logs / f"api-{label}-{n}.log")
                phases.append((name, out))
    side_by_side(phases, args.seconds)
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
