"""Where a worker's time goes over one chain of units (docbatch.worker.runner).

Claims and writes overlap the compute when the stage is threaded, so their time is not
the cost: the cost is what the compute thread spends *waiting* (for the next claimed unit,
or for the writer to take a unit). Inline (on a CPU) the compute thread claims and writes
itself, so ``claim_wait`` and ``write_wait`` are the claims and writes. The runner logs
one line per chain at INFO; ``python -m bench.unit_overhead`` reads those lines to print
the per-unit overhead next to the per-unit model time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# compute: the stage's own compute; start: around it on the compute thread (counting a
# claimed-ahead unit's attempt, the first cancel check, the time limit's clock).
FIELDS = ("compute", "start", "claim", "claim_wait", "write", "write_wait")


@dataclass
class ChainClock:
    started: float = field(default_factory=time.perf_counter)
    units: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0.0))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def timing(self, what: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:  # claims and writes may run on their own threads
                self.seconds[what] += time.perf_counter() - t0

    def moved(self, source: str, target: str, seconds: float) -> None:
        """Count ``seconds`` of what was timed as ``source`` as ``target`` instead."""
        with self._lock:
            self.seconds[source] -= seconds
            self.seconds[target] += seconds

    def line(self) -> str:
        wall = time.perf_counter() - self.started
        parts = " ".join(f"{k}={self.seconds[k]:.4f}" for k in FIELDS)
        return f"chain units={self.units} wall={wall:.4f} {parts}"
