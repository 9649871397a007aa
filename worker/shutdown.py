"""A worker asked to stop (SIGTERM: a rollout, a scale-in, ``docker compose stop``) finishes
its current unit or gives it back, within DOCBATCH_WORKER_SHUTDOWN_GRACE_SECONDS.

Kubernetes and Docker signal only the container's first process, Celery's main process,
which starts a warm shutdown (no new messages, wait for the running task). The unit runs in
a pool child, so the main process passes the SIGTERM on (``worker_shutting_down``), and the
child notes the time (``install``, called as a task starts). From then on the
runner (docbatch.worker.runner) claims no further unit; the unit computing may finish within
the grace period, past it the stage is stopped between two batches and the unit is given
back through the ledger (queued again, its attempt refunded, republished after the commit),
so another worker takes it at once, not after the lease period. A second SIGTERM after
``FORCE_AFTER_SECONDS`` (Celery's cold shutdown terminating its pool) ends the child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from types import FrameType
from typing import Any

log = logging.getLogger("docbatch.worker")
FORCE_AFTER_SECONDS = 2.0
_asked_at: float | None = None


def stopping() -> bool:
    """True once this process was asked to stop."""
    return _asked_at is not None


def past_grace(grace_seconds: float) -> bool:
    """True once this process was asked to stop more than ``grace_seconds`` ago."""
    return _asked_at is not None and time.monotonic() - _asked_at >= grace_seconds


def request_stop() -> None:
    """Note that this process should stop (what SIGTERM does; tests and ``run`` call it)."""
    global _asked_at
    if _asked_at is None:
        _asked_at = time.monotonic()
        log.info("asked to stop: finishing or giving back the unit in hand, claiming no more")


def reset() -> None:
    global _asked_at
    _asked_at = None


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # The same SIGTERM may come twice (to the process group, and passed on by the main
    # process); a later one is Celery's cold shutdown terminating its pool.
    if _asked_at is not None and time.monotonic() - _asked_at > FORCE_AFTER_SECONDS:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    request_stop()


def install() -> None:
    """In a pool child: SIGTERM asks for a stop instead of ending the process at once.

    Called as each task starts: billiard sets its own SIGTERM handler (exit at once) after
    ``worker_process_init``, so an earlier one would not last. A child that has not run a
    task yet holds no unit and may exit at once."""
    if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        signal.signal(signal.SIGTERM, _on_sigterm)


def pass_on_to_pool(**_: Any) -> None:
    """In the main process, on Celery's ``worker_shutting_down``: SIGTERM each pool child."""
    from billiard.process import active_children

    for child in active_children():
        if child.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
