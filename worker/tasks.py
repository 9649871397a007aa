"""Celery tasks: thin shells over docbatch.worker.runner and docbatch.domain.ledger.

A worker process serves one task (``Settings.worker_task``, set by ``docbatch worker
--task T``); its handler is loaded once per process after the fork
(``worker_process_init``), never in the parent, because CUDA does not survive a fork.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_init
from sqlalchemy.exc import DBAPIError, OperationalError

from docbatch.domain import webhooks
from docbatch.domain.broker import (
    CANCEL_TASK,
    PROCESS_TASK,
    RECONCILE_TASK,
    SCHEDULE_TICK_TASK,
    WEBHOOK_TASK,
)
from docbatch.domain.publish import publish_webhooks
from docbatch.schema.db import is_sqlite, transaction
from docbatch.schema.errors import TransientError
from docbatch.schema.settings import Settings, get_settings
from docbatch.schema.tables import EXTRACT
from docbatch.worker import metrics as worker_metrics
from docbatch.worker.app import app
from docbatch.worker.handlers.base import Handler, pick_device
from docbatch.worker.heartbeat import heartbeat
from docbatch.worker.pipeline import UnitProcessor, choose_processor
from docbatch.worker.reconcile import reconcile_once
from docbatch.worker.registry import load_handler
from docbatch.worker.threads import apply_thread_limits
from docbatch.worker.webhooks import deliver

log = logging.getLogger("docbatch.worker")
_handler: Handler | None = None
_processor: UnitProcessor | None = None
RETRYABLE = (OperationalError, DBAPIError, TransientError, ConnectionError)


def load_pinned_handler() -> Handler | None:
    global _handler, _processor
    settings = get_settings()
    task = settings.worker_task
    if not task or task == EXTRACT or _handler is not None:
        return _handler
    threads = apply_thread_limits(settings)
    handler = load_handler(task, settings)
    device = pick_device(settings.model_for(task).device)
    handler.setup(device)
    try:  # what serves a job with default params (summarize: the extractive MiniLM)
        model_id, revision = handler.model_for({})
    except Exception:
        model_id, revision = handler.model_id, handler.revision
    log.info("loaded %s model %s@%s on %s (%d threads)", task, model_id, revision, device, threads)
    _handler = handler
    _processor = choose_processor(settings)
    worker_metrics.start_server(settings.worker_metrics_port)
    return _handler


@worker_process_init.connect
def _load_model(**_: Any) -> None:
    settings = get_settings()
    if settings.worker_task == EXTRACT:
        from docbatch.worker.extract.expand import warm_up as warm_extractors

        warm_extractors(settings)
        return
    if load_pinned_handler() is not None:
        from docbatch.worker.pipeline import warm_up

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
def process_unit_task(self: Any, unit_id: int) -> str:
    if get_settings().worker_task == EXTRACT:
        from docbatch.worker.extraction import run_extract_unit

        outcome = run_extract_unit(unit_id, _with_retries(get_settings(), self.request.retries))
        send_new_webhooks(unit_id)
        return outcome.value
    handler = load_pinned_handler()
    if handler is None or _processor is None:
        raise RuntimeError("this worker has no task: start it with `docbatch worker --task T`")
    settings = _with_retries(get_settings(), self.request.retries)
    if is_sqlite():
        # no leases on SQLite: this task's own unit is the only one it holds
        with heartbeat(unit_id, settings.unit_heartbeat_seconds):
            outcome = _processor(unit_id, handler, settings)
    else:  # the lease holder heartbeats every unit it holds (worker/pipeline.py)
        outcome = _processor(unit_id, handler, settings)
    send_new_webhooks(unit_id)
    return outcome.value


def _with_retries(settings: Settings, retries: int) -> Settings:
    """A retry after a database/broker blip claims the unit again: that claim must not use
    up the attempts meant for workers that die (the cap stays finite: a redelivered
    message keeps its retry count)."""
    if not retries:
        return settings
    return settings.model_copy(update={"max_unit_attempts": settings.max_unit_attempts + retries})


def send_new_webhooks(unit_id: int) -> None:
    """If closing this unit ended its job, send the job's webhook now (the reconciler
    would otherwise pick it up within DOCBATCH_REQUEUE_AFTER_SECONDS)."""
    from sqlalchemy import select

    from docbatch.schema.tables import Unit

    try:
        with transaction() as s:
            job_id = s.scalar(select(Unit.job_id).where(Unit.id == unit_id))
            pending = webhooks.pending_for_job(s, job_id) if job_id else []
        publish_webhooks(pending)
    except Exception:  # the reconciler sends what is left
        log.exception("could not queue the webhooks of unit %d", unit_id)


@app.task(name=WEBHOOK_TASK, bind=True, acks_late=True, max_retries=None)
def deliver_webhook(self: Any, delivery_id: int) -> str:
    outcome, retry_after = deliver(delivery_id, get_settings())
    if retry_after is not None:
        raise self.retry(countdown=retry_after)
    return outcome


@app.task(name=CANCEL_TASK, autoretry_for=RETRYABLE, retry_backoff=True, max_retries=5)
def cancel_job(job_id: str) -> int:
    from docbatch.worker.cancel import sweep

    return sweep(job_id, get_settings())


@app.task(name=RECONCILE_TASK, autoretry_for=RETRYABLE, retry_backoff=True, max_retries=5)
def reconcile() -> int:
    return reconcile_once()


@app.task(name=SCHEDULE_TICK_TASK, autoretry_for=RETRYABLE, retry_backoff=True, max_retries=3)
def schedule_tick() -> int:
    from docbatch.worker.scheduler import tick

    return len(tick())
