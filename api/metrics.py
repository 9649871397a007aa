"""Prometheus metrics of the api, served at ``GET /metrics``.

Two kinds:

- read at scrape time from the sources of truth, so every api replica reports the same
  values: jobs by status and the webhook outbox's backlog (Postgres) and queue depth per
  task, ``extract`` and ``maintenance`` included (Redis ``LLEN`` of each queue, summed
  over the priority sub-queues kombu keeps for it);
- counted by this process as it ingests: documents and units created (sum them over
  replicas in PromQL).

Flower reports task runtimes but no queue depth. ``docbatch_queue_depth`` is what Redis
holds: a few ids per queue, since the fair dispatcher keeps the rest in Postgres
(docbatch.domain.dispatch). ``docbatch_queued_units`` is the backlog itself, every queued
unit per queue, sent or not: what autoscaling watches (ops/k8s/keda.yaml) and alerts on
work waiting should watch.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from functools import lru_cache

import redis as redis_lib
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from docbatch.domain import tallies
from docbatch.domain.build import build_info
from docbatch.schema.db import new_session
from docbatch.schema.settings import Settings, get_settings
from docbatch.schema.tables import EXTRACT, Job, WebhookDelivery, utcnow

log = logging.getLogger("docbatch.api")

REGISTRY = CollectorRegistry(auto_describe=True)
DOCUMENTS_INGESTED = Counter(
    "docbatch_documents_ingested", "Documents accepted into jobs", registry=REGISTRY
)
UNITS_INGESTED = Counter(
    "docbatch_units_ingested", "Work units created (one queue message each)", registry=REGISTRY
)
JOBS_CREATED = Counter("docbatch_jobs_created", "Jobs created", registry=REGISTRY)
REQUEST_SECONDS = Histogram(
    "docbatch_api_request_duration_seconds",
    "Seconds per api request, by route template (unmatched paths: 'unmatched'), method and status",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
build_info(REGISTRY, "api")


def ingested(documents: int, units: int) -> None:
    """Count a committed job's documents and units (called by the jobs router)."""
    JOBS_CREATED.inc()
    DOCUMENTS_INGESTED.inc(documents)
    UNITS_INGESTED.inc(units)


def priority_queue_names(queue: str) -> list[str]:
    """The Redis keys kombu uses for ``queue`` with ``queue_order_strategy='priority'``.

    Priority 0 lives under the queue's own name, the other steps under
    ``<queue>\\x06\\x16<step>`` (kombu.transport.redis.Channel.sep; the steps are
    docbatch.domain.broker.PRIORITY_STEPS).
    """
    from kombu.transport.redis import Channel

    from docbatch.domain.broker import PRIORITY_STEPS

    return [f"{queue}{Channel.sep}{step}" if step else queue for step in PRIORITY_STEPS]


@lru_cache(maxsize=4)
def _redis(url: str) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


class StateCollector(Collector):
    """Jobs by status and queue depth per task, read fresh on every scrape."""

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # What registering asks for (auto_describe): without it the registry would call
        # collect(), and importing the api would query Postgres and Redis.
        yield GaugeMetricFamily("docbatch_jobs", "Jobs by status", labels=["status"])
        yield GaugeMetricFamily("docbatch_queue_depth", "", labels=["task", "model", "queue"])
        yield GaugeMetricFamily(
            "docbatch_oldest_queued_unit_age_seconds", "", labels=["task", "model"]
        )
        yield GaugeMetricFamily("docbatch_queued_units", "", labels=["queue"])
        for name in ("documents", "original_bytes", "openai_file_bytes"):
            yield GaugeMetricFamily(f"docbatch_stored_{name}", "")
        yield GaugeMetricFamily("docbatch_webhook_deliveries_pending", "")
        yield GaugeMetricFamily("docbatch_webhook_oldest_pending_age_seconds", "")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        settings = get_settings()
        jobs = GaugeMetricFamily("docbatch_jobs", "Jobs by status", labels=["status"])
        try:
            with new_session(settings) as s:
                rows = s.execute(select(Job.status, func.count()).group_by(Job.status)).all()
            for status, count in rows:
                jobs.add_metric([status], count)
        except Exception:  # a scrape must answer even with the db down
            log.exception("metrics: reading jobs by status failed")
        yield jobs
        yield from _unit_ages(settings)
        if settings.metrics_tenants:
            yield from _per_tenant(settings)
        yield from _storage(settings)
        yield from _webhooks(settings)

        queued = GaugeMetricFamily(
            "docbatch_queued_units",
            "Units queued per queue, in the broker or in the backlog (Postgres)",
            labels=["queue"],
        )
        try:
            with new_session(settings) as s:
                seen = tallies.queued_by_queue(s)  # per open job, not per queued unit
            # A deployment's queue with nothing queued reads 0, not absent.
            for name in (*settings.fleet, EXTRACT):
                seen.setdefault(settings.queue_for(name), 0)
            for queue, count in sorted(seen.items()):
                queued.add_metric([queue], count)
        except Exception:
            log.exception("metrics: reading queued units failed")
        yield queued

        depth = GaugeMetricFamily(
            "docbatch_queue_depth",
            "Messages waiting in each deployment's queue (all priority levels)",
            labels=["task", "model", "queue"],
        )
        if settings.broker_url.startswith(("redis://", "rediss://")):
            try:
                client = _redis(settings.broker_url)
                # extract is not a model task (not in TASKS), but its units queue too.
                queues = {
                    (d.task, d.name): settings.queue_for(d.name) for d in settings.fleet.values()
                }
                queues[(EXTRACT, EXTRACT)] = settings.queue_for(EXTRACT)
                queues[("maintenance", "maintenance")] = settings.maintenance_queue
                with client.pipeline(transaction=False) as pipe:
                    for queue in queues.values():
                        for key in priority_queue_names(queue):
                            pipe.llen(key)
                    lengths = iter(pipe.execute())
                for (task, model), queue in queues.items():
                    total = sum(next(lengths) for _ in priority_queue_names(queue))
                    depth.add_metric([task, model, queue], total)
            except Exception:
                log.exception("metrics: reading queue lengths failed")
        yield depth


def _unit_ages(settings: Settings) -> Iterator[GaugeMetricFamily]:
    age = GaugeMetricFamily(
        "docbatch_oldest_queued_unit_age_seconds",
        "Seconds the oldest queued unit of each deployment has waited since it was published "
        "(or last republished); grows while no worker takes the deployment's units",
        labels=["task", "model"],
    )
    try:
        with new_session(settings) as s:
            rows = tallies.oldest_queued(s).items()  # an index entry per deployment
        now = utcnow()
        # Units are keyed by deployment (a task's default is named after the task).
        for name, oldest in rows:
            if oldest is not None:
                oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=dt.UTC)
                waited = max((now - oldest).total_seconds(), 0.0)
                age.add_metric([settings.task_of(name), name], waited)
    except Exception:
        log.exception("metrics: reading queued units failed")
    yield age


def _per_tenant(settings: Settings) -> Iterator[GaugeMetricFamily]:
    """Jobs by tenant and status, queued units by tenant and task: the ``limit`` tenants
    with most jobs by name, the rest as ``other`` (DOCBATCH_METRICS_TENANTS)."""
    limit = settings.metrics_tenants
    jobs = GaugeMetricFamily(
        "docbatch_tenant_jobs", "Jobs by tenant and status", labels=["tenant", "status"]
    )
    queued = GaugeMetricFamily(
        "docbatch_tenant_queued_units",
        "Queued units by tenant and task",
        labels=["tenant", "task"],
    )
    try:
        with new_session(settings) as s:
            by_status = s.execute(
                select(Job.tenant, Job.status, func.count()).group_by(Job.tenant, Job.status)
            ).all()
            by_task = tallies.queued_by_tenant(s)
        totals: dict[str, int] = {}
        for tenant, _, n in by_status:
            totals[tenant] = totals.get(tenant, 0) + int(n)
        named = set(sorted(totals, key=lambda t: (-totals[t], t))[:limit])
        for family, rows in ((jobs, by_status), (queued, by_task)):
            summed: dict[tuple[str, str], int] = {}
            for tenant, label, n in rows:
                key = (tenant if tenant in named else "other", str(label))
                summed[key] = summed.get(key, 0) + int(n)
            for key, n in sorted(summed.items()):
                family.add_metric(list(key), n)
    except Exception:
        log.exception("metrics: reading per-tenant counts failed")
    yield jobs
    yield queued


def _storage(settings: Settings) -> Iterator[GaugeMetricFamily]:
    """Stored documents and bytes (docbatch.domain.usage): per tenant for the ``tenants``
    with most documents (the rest as ``other``) when DOCBATCH_METRICS_TENANTS is set,
    else one total without a tenant label."""
    tenants = settings.metrics_tenants
    labels = ["tenant"] if tenants else []
    families = {
        "documents": GaugeMetricFamily(
            "docbatch_stored_documents", "Documents stored (jobs not yet deleted)", labels=labels
        ),
        "original_bytes": GaugeMetricFamily(
            "docbatch_stored_original_bytes",
            "Bytes of original files stored (once per tenant and content)",
            labels=labels,
        ),
        "openai_file_bytes": GaugeMetricFamily(
            "docbatch_stored_openai_file_bytes", "Bytes of /v1/files files", labels=labels
        ),
    }
    try:
        from docbatch.domain.usage import storage_by_tenant

        with new_session(settings) as s:
            by_tenant = storage_by_tenant(s)
        named = set(sorted(by_tenant, key=lambda t: (-by_tenant[t]["documents"], t))[:tenants])
        summed: dict[str, dict[str, int]] = {}
        for tenant, figures in by_tenant.items():
            key = (tenant if tenant in named else "other") if tenants else ""
            into = summed.setdefault(key, dict.fromkeys(families, 0))
            for name, value in figures.items():
                into[name] += value
        for key, figures in sorted(summed.items()):
            for name, family in families.items():
                family.add_metric([key] if tenants else [], figures[name])
    except Exception:
        log.exception("metrics: reading stored data failed")
    yield from families.values()


def _webhooks(settings: Settings) -> Iterator[GaugeMetricFamily]:
    """The webhook outbox's backlog: deliveries not yet made that will still be tried, and
    how long the oldest has waited (grows while `docbatch webhooks` is down or stuck)."""
    pending = GaugeMetricFamily(
        "docbatch_webhook_deliveries_pending",
        "Webhook deliveries not yet delivered that will still be tried",
    )
    oldest = GaugeMetricFamily(
        "docbatch_webhook_oldest_pending_age_seconds",
        "Seconds since the oldest pending webhook delivery was written (0: none pending)",
    )
    try:
        with new_session(settings) as s:
            count, first = s.execute(
                select(func.count(), func.min(WebhookDelivery.created_at)).where(
                    WebhookDelivery.delivered_at.is_(None),
                    WebhookDelivery.attempts < settings.webhook_max_attempts,
                )
            ).one()
        pending.add_metric([], int(count))
        if first is not None:
            first = first if first.tzinfo else first.replace(tzinfo=dt.UTC)
        oldest.add_metric([], max((utcnow() - first).total_seconds(), 0.0) if first else 0.0)
    except Exception:
        log.exception("metrics: reading the webhook outbox failed")
    yield pending
    yield oldest


REGISTRY.register(StateCollector())
router = APIRouter(tags=["health"])


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    body = await run_in_threadpool(generate_latest, REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
