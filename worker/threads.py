"""How many threads a model worker uses, so workers sharing a host's cores don't fight.

torch defaults to one intra-op thread per core in every process: three workers on two
cores then run six busy threads on two cores, and each batch waits on the slowest
thread. A worker takes ``DOCBATCH_TORCH_THREADS`` threads, or by default its share of
the cores it may run on: ``cores // DOCBATCH_WORKERS_PER_HOST`` (at least one). "Cores it
may run on" is its CPU affinity, lowered to its cgroup's CPU quota (a container's
``cpus:`` / a pod's CPU limit, which affinity does not show).

A static share leaves cores idle once the other workers run out of work (three tasks
on one box: the last task still running keeps its third of the cores). With
``DOCBATCH_CORE_SHARE_DIR`` (a folder the workers of one host share; ``docbatch run``
sets it) the share follows the work instead: a worker running a unit holds a lock file
there, and before every batch it takes ``cores // (workers holding one)`` threads. A
lock (``flock``) dies with its process, so a killed worker is never counted.

The same count goes to OpenMP/MKL (through torch) and to the tokenizers' thread pool;
with one thread the tokenizers run single-threaded. OpenMP's idle threads wait passively
(``OMP_WAIT_POLICY=PASSIVE`` unless set): a spinning one takes a core from the work.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from docbatch.schema.settings import Settings

CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")


def cgroup_cpu_limit(v2: Path = CGROUP_V2, v1: Path = CGROUP_V1) -> int | None:
    """The CPU quota of this process's cgroup, rounded up to whole cores; None if unlimited."""
    try:
        quota, period = v2.read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(v1.read_text())
        period_us = int((v1.parent / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.ceil(quota_us / period_us)) if quota_us > 0 and period_us > 0 else None


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity (a cpuset), within its CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return min(cores, limit) if limit else cores


def worker_threads(settings: Settings) -> int:
    if settings.torch_threads > 0:
        return settings.torch_threads
    return max(1, available_cores() // max(1, settings.workers_per_host))


class CoreShare:
    """The workers of one host split its cores among those running a unit right now."""

    def __init__(self, folder: Path, cores: int) -> None:
        self.folder = folder
        self.cores = cores
        self.folder.mkdir(parents=True, exist_ok=True)
        self.marker = folder / f"{socket.gethostname()}-{os.getpid()}.busy"
        self.threads = 0

    def busy_workers(self) -> int:
        """Workers holding their marker's lock (this one included, while it runs a unit)."""
        count = 0
        for path in self.folder.glob("*.busy"):
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:  # removed as we looked
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                count += 1  # held: that worker is running a unit
            else:  # nobody holds it: its worker finished or died
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        return count

    def rebalance(self) -> int:
        """Set this process's torch threads to its share now; returns the count."""
        threads = max(1, self.cores // max(1, self.busy_workers()))
        if threads != self.threads:
            import torch

            torch.set_num_threads(threads)
            self.threads = threads
        return threads

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        with self.marker.open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                self.rebalance()
                yield
            finally:
                with contextlib.suppress(OSError):
                    self.marker.unlink()
                fcntl.flock(fh, fcntl.LOCK_UN)


_share: CoreShare | None = None


def apply_thread_limits(settings: Settings) -> int:
    """Set this process's thread counts; call before the model loads. Returns the count."""
    global _share
    threads = worker_threads(settings)
    # Read by OpenMP/MKL and the tokenizers' (rayon) pool when they start, if not set.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    # OpenMP threads waiting for the next parallel op sleep instead of spinning: spinning,
    # they take the cores from the thread with the work whenever anything else runs on
    # the host (the api, Postgres, another worker). The cause of the worker's slower
    # `generate` (BENCHMARKS.md, "The fixed cost per unit"). An operator's value is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads == 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before torch's first parallel op
        torch.set_num_interop_threads(min(threads, 2))
    if settings.core_share_dir and settings.torch_threads <= 0:
        _share = CoreShare(Path(settings.core_share_dir), available_cores())
        _share.threads = threads
    return threads


def busy() -> contextlib.AbstractContextManager[None]:
    """Around a unit's model work: counts this worker as busy in the host's core share."""
    return _share.busy() if _share is not None else contextlib.nullcontext()


def rebalance() -> None:
    """Before a batch: take this worker's share of the cores as it is now (if shared)."""
    if _share is not None:
        _share.rebalance()
