"""How many threads a model worker uses, so workers sharing a host's cores don't fight.

torch defaults to one intra-op thread per core in every process: three workers on two
cores then run six busy threads on two cores, and each batch waits on the slowest
thread. A worker takes ``DOCBATCH_TORCH_THREADS`` threads, or by default its share of
the cores it may run on: ``cores // DOCBATCH_WORKERS_PER_HOST`` (at least one).
The same count goes to OpenMP/MKL (through torch) and to the tokenizers' thread pool;
with one thread the tokenizers run single-threaded.
"""

from __future__ import annotations

import contextlib
import os

from schema.settings import Settings


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_threads(settings: Settings) -> int:
    if settings.torch_threads > 0:
        return settings.torch_threads
    return max(1, available_cores() // max(1, settings.workers_per_host))


def apply_thread_limits(settings: Settings) -> int:
    """Set this process's thread counts; call before the model loads. Returns the count."""
    threads = worker_threads(settings)
    # Read by OpenMP/MKL and the tokenizers' (rayon) pool when they start, if not set.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    if threads == 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before torch's first parallel op
        torch.set_num_interop_threads(min(threads, 2))
    return threads
