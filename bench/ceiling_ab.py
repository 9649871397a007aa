"""One no-op job for side-by-side runs of two checkouts: docs/s, and CPU per unit of the
workers and of the Postgres backends that serve them.

Throughput on a shared machine swings with other people's load; the CPU the workers'
own Postgres backends spend per unit does not, so it is the figure to compare between
two checkouts run alternately (each from its own directory)::

    cd <checkout> && .venv/bin/python -m bench.ceiling_ab --docs 20000

prints one ``RESULT`` line: docs/s (first claim to last unit), worker CPU per unit,
CPU per unit of the backends whose client port is a worker's socket, commits and row
updates per unit (this database, every process), the load average. ``--log-statements``
sets ``log_min_duration_statement = 0`` on the run's database only, so the server log
holds every statement of the run with its parse, bind (planning) and execute times.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.cluster import Api, file_chunks, start_workers, steady_window, stop_all
from bench.env import BenchEnv
from bench.load import _tree_cpu_seconds
from bench.million import short_corpus, sql

TICK = os.sysconf("SC_CLK_TCK")
COUNTERS = (
    "SELECT xact_commit, tup_updated FROM pg_stat_database WHERE datname = current_database()"
)


def cpu_of(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TICK
    except OSError:
        return None


def tree(pid: int) -> list[int]:
    """The process and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return out


def ports_of(pids: list[int]) -> set[int]:
    """Local TCP ports of the sockets these processes hold."""
    inodes = set()
    for p in pids:
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as fh:
            next(fh)
            for line in fh:
                cols = line.split()
                if cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


class Backends:
    """CPU of the Postgres backends whose client is a worker, sampled while the job runs
    (a backend that exits keeps what it had at the last sample)."""

    def __init__(self, env: BenchEnv, workers: list[Any]) -> None:
        self.env, self.workers = env, workers
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[int, float]:
        ports = ports_of([p for w in self.workers for p in tree(w.pid)])
        rows = sql(
            self.env,
            "SELECT pid, client_port FROM pg_stat_activity WHERE datname = current_database()",
        )
        got = {}
        for pid, port in rows:
            if port in ports and (c := cpu_of(pid)) is not None:
                got[pid] = c
        return got

    def start(self) -> None:
        self.base = self.sample()
        self.last = dict(self.base)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            self.last.update(self.sample())

    def total(self) -> float:
        self.stop.set()
        self.thread.join()
        self.last.update(self.sample())
        return sum(c - self.base.get(pid, 0.0) for pid, c in self.last.items())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--docs", type=int, default=20000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--unit-tokens", type=int, default=65536)
    p.add_argument("--log-statements", action="store_true")
    p.add_argument("--label", default=os.path.basename(os.getcwd()))
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="docbatch-ceiling-ab-"))
    env = BenchEnv(tmp / "logs").open()
    if a.log_statements:
        sql(env, f'ALTER DATABASE "{env.db_name}" SET log_min_duration_statement = 0')
        print("statements logged for database", env.db_name, flush=True)
    api = Api(env, "api-ab", {"DOCBATCH_UNIT_TOKENS": str(a.unit_tokens)})
    extra = {
        "DOCBATCH_TORCH_THREADS": "1",
        "DOCBATCH_MODELS__EMBED__HANDLER": "bench.handlers:NoopHandler",
    }
    workers = start_workers(env, "embed", a.workers, extra, "noop")
    try:
        path = short_corpus(tmp / "docs.jsonl", a.docs)
        time.sleep(1)
        backends = Backends(env, workers)
        backends.start()
        w0 = sum(_tree_cpu_seconds(w.pid) for w in workers)
        load0 = os.getloadavg()[0]
        c0 = sql(env, COUNTERS)[0]
        job = api.submit_ndjson(file_chunks(path), "embed")
        done = api.wait(job["id"], timeout=1800)
        assert done["counts"]["embed"]["succeeded"] == a.docs, done["counts"]
        w1 = sum(_tree_cpu_seconds(w.pid) for w in workers)
        pg = backends.total()
        time.sleep(1.2)  # pg_stat_database is flushed about once a second
        c1 = sql(env, COUNTERS)[0]
        steady, _chunks, _ = steady_window(job["id"])
        units = sql(env, "SELECT count(*) FROM units WHERE job_id = :j", j=job["id"])[0][0]
        load1 = os.getloadavg()[0]
        print(
            f"RESULT {a.label} docs/s {a.docs / steady:8.1f} units {units} "
            f"workerCPU/unit ms {1000 * (w1 - w0) / units:6.1f} "
            f"workerPG-CPU/unit ms {1000 * pg / units:6.1f} "
            f"commits/unit {(c1[0] - c0[0]) / units:5.2f} "
            f"updates/unit {(c1[1] - c0[1]) / units:5.2f} "
            f"load {load0:.1f}->{load1:.1f} at {time.strftime('%H:%M:%S', time.gmtime())}",
            flush=True,
        )
        return 0
    finally:
        stop_all(workers)
        api.stop()
        env.close()


if __name__ == "__main__":
    sys.exit(main())
