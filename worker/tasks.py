"""Celery tasks: thin shells over docbatch.worker.runner and the maintenance functions.

A worker process serves one stage (``Settings.worker_task``, set by ``docbatch worker
--task T``): the extract stage, or a model task whose handler is loaded once per process
after the fork (``worker_process_init``), never in the parent, because CUDA does not
survive a fork. Either way its units go through the one ``UnitRunner``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import worker_process_init, worker_ready, worker_shutting_down
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from docbatch.domain import tracing
from docbatch.domain.broker import (
    BATCH_TICK_TASK,
    CANCEL_TASK,
    DELETE_TASK,
    LIFECYCLE_TASK,
    PROCESS_TASK,
    RECONCILE_TASK,
    SCHEDULE_TICK_TASK,
    WEBHOOK_TASK,
)
from docbatch.domain.retry import RetryPolicy
from docbatch.schema.db import transaction
from docbatch.schema.logs import bind_process
from docbatch.schema.settings import Settings, get_settings
from docbatch.schema.tables import EXTRACT
from docbatch.worker import metrics as worker_metrics
from docbatch.worker import shutdown
from docbatch.worker.app import app
from docbatch.worker.handlers.base import pick_device
from docbatch.worker.lease import drop_lease, holder_for
from docbatch.worker.reconcile import reconcile_once
from docbatch.worker.registry import load_handler
from docbatch.worker.runner import UnitRunner
from docbatch.worker.stage import Stage
from docbatch.worker.threads import apply_thread_limits
from docbatch.worker.webhooks import deliver

log = logging.getLogger("docbatch.worker")
_stage: Stage[Any, Any] | None = None
RETRYABLE = (OperationalError, DBAPIError, ConnectionError)


def load_stage(settings: Settings) -> Stage[Any, Any] | None:
    """This process's stage, made once: the extract stage, or the pinned model's."""
    global _stage
    task = settings.worker_task
    if not task or _stage is not None:
        return _stage
    if task == EXTRACT:
        from docbatch.worker.extract.expand import warm_up as warm_extractors
        from docbatch.worker.extraction import ExtractStage

        warm_extractors(settings)
        _stage = ExtractStage(settings)
        return _stage
    from docbatch.worker.model_stage import ModelStage

    threads = apply_thread_limits(settings)
    handler = load_handler(task, settings)
    device = pick_device(settings.model_for(task).device)
    handler.setup(device)
    try:  # what serves a job with default params (summarize: the extractive MiniLM)
        model_id, revision = handler.model_for({})
    except Exception:
        model_id, revision = handler.model_id, handler.revision
    log.info(
        "loaded deployment %s (%s) model %s@%s on %s (%d threads)",
        task,
        handler.task,
        model_id,
        revision,
        device,
        threads,
    )
    _stage = ModelStage(handler, settings)
    worker_metrics.start_server(settings.worker_metrics_port)
    return _stage


def _warm_up(settings: Settings) -> None:
    """Open the database pool and the lease connection before the first task arrives."""
    try:
        with transaction(settings) as s:
            s.execute(text("SELECT 1"))
        holder_for(settings)
    except Exception:  # the first task retries; never block start-up
        log.warning("database not reachable at worker start; will retry on the first task")
        drop_lease()


@worker_process_init.connect
def _load_stage(**_: Any) -> None:
    shutdown.reset()  # a new pool child
    settings = get_settings()
    bind_process(task=settings.worker_task)  # on every log line of this process
    tracing.setup(settings.otlp_endpoint, f"docbatch-worker-{settings.worker_task or 'main'}")
    if load_stage(settings) is not None:
        _warm_up(settings)
        mark_ready(settings)


@worker_ready.connect
def _consumer_ready(**_: Any) -> None:
    settings = get_settings()
    if not settings.worker_task:  # beat-less helpers (maintenance, webhooks): no model
        mark_ready(settings)


def mark_ready(settings: Settings) -> None:
    """Write DOCBATCH_READY_FILE (a readinessProbe reads it): this worker can take units."""
    if settings.ready_file:
        try:
            with open(settings.ready_file, "w") as fh:
                fh.write(f"{os.getpid()}\n")
        except OSError:
            log.exception("cannot write the ready file %s", settings.ready_file)


@worker_shutting_down.connect
def _pass_on_stop(**_: Any) -> None:
    shutdown.request_stop()  # the solo pool runs units in this process
    shutdown.pass_on_to_pool()


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
    shutdown.install()  # SIGTERM: finish or give back the unit in hand (worker/shutdown.py)
    settings = get_settings()
    stage = load_stage(settings)
    if stage is None:
        raise RuntimeError("this worker has no task: start it with `docbatch worker --task T`")
    # A retry after a database/broker blip claims again: that claim must not use up the
    # attempts meant for workers that die (docbatch.domain.retry).
    policy = RetryPolicy.of(settings).with_extra_attempts(self.request.retries)
    return UnitRunner(stage, settings, policy).run(unit_id).value


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


@app.task(name=DELETE_TASK, autoretry_for=RETRYABLE, retry_backoff=True, max_retries=5)
def delete_job(job_id: str) -> int:
    from docbatch.worker.deletion import delete_job as run

    return run(job_id, get_settings())


@app.task(name=LIFECYCLE_TASK, autoretry_for=RETRYABLE, retry_backoff=True, max_retries=3)
def lifecycle() -> dict[str, object]:
    from docbatch.worker.lifecycle import lifecycle_pass

    return lifecycle_pass(get_settings()).as_dict()


@app.task(name=RECONCILE_TASK, autoretry_for=RETRYABLE, retry_backoff=True, max_retries=5)
def reconcile() -> int:
    return reconcile_once(get_settings())


@app.task(name=BATCH_TICK_TASK, autoretry_for=RETRYABLE, retry_backoff=True, max_retries=3)
def batch_tick() -> int:
    from docbatch.worker.batches import tick

    return tick(get_settings())


@app.task(name=SCHEDULE_TICK_TASK, autoretry_for=RETRYABLE, retry_backoff=True, max_retries=3)
def schedule_tick() -> int:
    from docbatch.worker.scheduler import tick

    return len(tick(get_settings()))
