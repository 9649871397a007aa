"""Overlapping a chain of units: results written while the next unit computes.

The runner (docbatch.worker.runner) hands each computed unit to a ``Writer``, which
writes and closes it (one transaction per unit, as always) on a thread of its own, or at
once in the caller's thread (``threaded=False``), and then lets the unit go; the claim of
the next unit runs on a ``ThreadPoolExecutor`` or on ``Inline``. The design and the
reasons (why claim ahead in Postgres rather than prefetch Celery messages, what happens
when a worker dies mid-chain) are in docs/concepts/unit-lifecycle.md.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any, TypeVar

from docbatch.worker.chain_clock import ChainClock
from docbatch.worker.stage import Held, Verdict

if TYPE_CHECKING:
    from docbatch.worker.lease import Lease, Unleased
    from docbatch.worker.runner import UnitRunner

log = logging.getLogger("docbatch.worker")
T = TypeVar("T")


class Writer:
    """Writes and closes units in order (on a thread, or inline in ``put``).

    One unit's write failing never stops the others: each queued unit is written, and a
    failure is handled by the runner (a transient error gives the unit back, attempt
    refunded). The first error is returned by ``close`` (so the task retries)."""

    def __init__(
        self,
        runner: UnitRunner[Any, Any],
        holder: Lease | Unleased,
        *,
        threaded: bool = True,
        clock: ChainClock | None = None,
    ) -> None:
        self.runner = runner
        self.clock = clock or ChainClock()
        self.holder = holder
        self.queue: queue.Queue[tuple[Held[Any], Any] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.verdicts: dict[int, Verdict] = {}
        self.thread: threading.Thread | None = None
        if threaded:
            self.thread = threading.Thread(target=self._run, name="docbatch-writer", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            self._write(*item)

    def _write(self, held: Held[Any], computed: Any) -> None:
        try:
            with self.clock.timing("write"):
                self.verdicts[held.unit_id] = self.runner.finish(self.holder, held, computed)
        except BaseException as exc:  # surfaced by close()
            log.exception("writing unit %s failed", held.unit_id)
            if self.error is None:
                self.error = exc

    def put(self, held: Held[Any], computed: Any) -> None:
        if self.thread is None:
            self._write(held, computed)
        else:
            self.queue.put((held, computed))

    def close(self) -> BaseException | None:
        """Wait for every queued write; the first write error, if any (never raises, so
        an exception already on its way is not replaced)."""
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
        return self.error


class Inline(Executor):
    """An executor that runs what it is given at once, in the caller's thread."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        done: Future[T] = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            done.set_exception(exc)
        return done
