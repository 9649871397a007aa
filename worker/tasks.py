"""Celery tasks: thin shells over worker.runner and schema.ledger.

A worker process serves one task (``DOCBATCH_WORKER_TASK``); its handler is loaded
once per process after the fork (``worker_process_init``), never in the parent,
because CUDA does not survive a fork.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

from celery.signals import worker_process_init
from sqlalchemy.exc import DBAPIError, OperationalError

from schema import jobs, ledger
from schema.db import transaction
from schema.errors import TransientError
from schema.settings import get_settings
from schema.tables import utcnow
from worker.app import PROCESS_TASK, RECONCILE_TASK, app
from worker.handlers.base import Handler, pick_device
from worker.publish import publish_units
from worker.registry import load_handler

log = logging.getLogger("docbatch.worker")
_handler: Handler | None = None
RETRYABLE = (OperationalError, DBAPIError, TransientError, ConnectionError)


def load_pinned_handler() -> Handler | None:
    global _handler
    task = os.environ.get("DOCBATCH_WORKER_TASK")
    if not task or _handler is not None:
        return _handler
    settings = get_settings()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    handler = load_handler(task, settings)
    device = pick_device(settings.model_for(task).device)
    handler.setup(device)
    log.info("loaded %s model %s@%s on %s", task, handler.model_id, handler.revision, device)
    _handler = handler
    return _handler


@worker_process_init.connect
def _load_model(**_: Any) -> None:
    if load_pinned_handler() is not None:
        from worker.pipeline import warm_up

        warm_up()


@app.task(
    name=PROCESS_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=RETRYABLE,
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=20,
)
def process_unit(self: Any, unit_id: int) -> str:
    from worker.pipeline import process_units as run

    handler = load_pinned_handler()
    if handler is None:
        raise RuntimeError("this worker has no task: start it with `docbatch worker --task T`")
    return run(unit_id, handler, get_settings())


@app.task(name=RECONCILE_TASK, autoretry_for=RETRYABLE, retry_backoff=True, max_retries=5)
def reconcile() -> int:
    return reconcile_once()


def reconcile_once() -> int:
    """Republish units whose messages look lost (the outbox sweep); returns how many."""
    settings = get_settings()
    now = utcnow()
    with transaction() as s:
        stale = ledger.stale_units(
            s,
            queued_before=now - dt.timedelta(seconds=settings.requeue_after_seconds),
            running_before=now - dt.timedelta(seconds=settings.running_lease_seconds),
        )
        jobs.touch_published(s, [unit_id for unit_id, _ in stale])
    if stale:
        log.warning("republishing %d units whose messages were not consumed", len(stale))
        publish_units(stale)
    return len(stale)
