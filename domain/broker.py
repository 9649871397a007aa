"""The Celery app's configuration, shared by everything that sends or consumes messages.

The api publishes through it (domain/publish.py) without importing the worker; the
worker, beat and Flower use ``docbatch.worker.app``, which is this app with the tasks of
worker/tasks.py registered. No torch here.

Settings: late acks, prefetch 1, requeue on a lost
worker (with an attempt cap kept in Postgres), no result backend (Postgres holds
results), task events on for Flower.

Queues: ``<prefix>.<task>`` for every task in ``docbatch.schema.tasks.TASKS``
(``Settings.queue_for``), chosen when
a unit is published and consumed by ``docbatch worker --task T``; ``<prefix>.maintenance``
for beat's reconcile/schedule ticks and webhooks.
"""

from __future__ import annotations

import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any

from celery import Celery

from docbatch.schema.settings import Settings, get_settings

PROCESS_TASK = "docbatch.process_unit"
RECONCILE_TASK = "docbatch.reconcile"
SCHEDULE_TICK_TASK = "docbatch.schedule_tick"
WEBHOOK_TASK = "docbatch.deliver_webhook"
CANCEL_TASK = "docbatch.cancel_job"
BATCH_TICK_TASK = "docbatch.batch_tick"
DELETE_TASK = "docbatch.delete_job"
LIFECYCLE_TASK = "docbatch.lifecycle"


# One Redis list per docbatch priority level (kombu's default is 4 lists: 0, 3, 6, 9).
PRIORITY_STEPS = list(range(10))
MAX_PRIORITY = 9


def broker_priority(priority: int) -> int:
    """The message priority for a job of ``priority`` (0-9, 9 = most urgent).

    kombu's Redis transport pops its lists in ``priority_steps`` order, lowest number
    first (the reverse of AMQP), so the most urgent job gets message priority 0.
    """
    return MAX_PRIORITY - min(max(int(priority), 0), MAX_PRIORITY)


def _broker_options(settings: Settings) -> dict[str, Any]:
    url = settings.broker_url
    if url.startswith("filesystem://"):
        folder = Path(settings.broker_folder)
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # Exchange tables; kombu's default is ./control in whatever the cwd is.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.05,
        }
    # Longer than any unit can take, or Redis redelivers a running unit to a second worker.
    return {
        "visibility_timeout": 4 * 3600,
        "queue_order_strategy": "priority",
        "priority_steps": PRIORITY_STEPS,
    }


def _broker_tls(url: str) -> dict[str, Any] | None:
    """TLS options for a ``rediss://`` broker that names none: verify the server's
    certificate against the system's CAs, as redis-py does for the same URL. kombu's own
    default would not verify it at all. The URL's ``ssl_cert_reqs``/``ssl_ca_certs``/
    ``ssl_certfile``/``ssl_keyfile`` parameters override this."""
    if not url.startswith("rediss://"):
        return None
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def make_app(settings: Settings) -> Celery:
    app = Celery("docbatch", broker=settings.broker_url)
    app.conf.update(
        broker_use_ssl=_broker_tls(settings.broker_url),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.maintenance_queue,
        broker_transport_options=_broker_options(settings),
        broker_connection_retry_on_startup=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_proc_alive_timeout=300,
        worker_max_tasks_per_child=1000,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        enable_utc=True,
        timezone="UTC",
        beat_schedule={
            "reconcile": {
                "task": RECONCILE_TASK,
                "schedule": settings.reconcile_interval_seconds,
                "options": {"queue": settings.maintenance_queue, "expires": 60},
            },
            "batch-tick": {
                "task": BATCH_TICK_TASK,
                "schedule": settings.batch_tick_seconds,
                "options": {
                    "queue": settings.maintenance_queue,
                    "expires": max(5.0, 2 * settings.batch_tick_seconds),
                },
            },
            # Interrupted deletes, orphans, retention and expiry (docbatch.domain.lifecycle).
            "lifecycle": {
                "task": LIFECYCLE_TASK,
                "schedule": settings.lifecycle_interval_seconds,
                "options": {
                    "queue": settings.maintenance_queue,
                    "expires": max(30.0, settings.lifecycle_interval_seconds),
                },
            },
            # Every beat may send ticks; schedule_runs makes each period fire once.
            "schedule-tick": {
                "task": SCHEDULE_TICK_TASK,
                "schedule": settings.schedule_tick_seconds,
                "options": {
                    "queue": settings.maintenance_queue,
                    "expires": max(5.0, 2 * settings.schedule_tick_seconds),
                },
            },
        },
    )
    return app


# The worker's, beat's and Flower's app (``celery -A docbatch.worker.app``): an entry point,
# so it reads the environment's settings.
app = make_app(get_settings())


@lru_cache(maxsize=4)
def _app_for_json(settings_json: str) -> Celery:
    return make_app(Settings.model_validate_json(settings_json))


def app_for(settings: Settings) -> Celery:
    """The app for ``settings``: this process's ``app`` when they are the environment's,
    else one built for them (``docbatch run``, benchmarks and tests pass theirs)."""
    if settings is get_settings():
        return app
    return _app_for_json(settings.model_dump_json())
