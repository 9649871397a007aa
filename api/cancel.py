"""Cancelling a job from a request: the same for /v1/jobs and /v1/batches.

``cancel`` runs in the caller's transaction; ``announce`` goes after the commit and
queues what the cancel started (the batched close of a big job's queued units, the
terminal webhook). A lost message only delays either: the reconciler resends both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from docbatch.domain import jobs, webhooks
from docbatch.domain.publish import publish_cancels, publish_webhooks
from docbatch.schema.settings import Settings
from docbatch.schema.tables import JobStatus

log = logging.getLogger("docbatch.api")


@dataclass
class Cancelled:
    job_id: str
    sweep: bool = False  # queued units left to close in batches (docbatch.worker.cancel)
    webhooks: list[int] = field(default_factory=list)


def cancel(session: Session, tenant: str, job_id: str, settings: Settings) -> Cancelled:
    job = jobs.cancel_job(session, tenant, job_id, inline_documents=settings.cancel_batch_documents)
    return Cancelled(
        job.id,
        sweep=job.status == JobStatus.cancelling.value,
        webhooks=webhooks.pending_for_job(session, job.id),
    )


def announce(done: Cancelled) -> None:
    if done.sweep:
        try:
            publish_cancels([done.job_id])
        except Exception:  # the reconciler sends it again
            log.exception("queueing the cancel of job %s failed", done.job_id)
    if done.webhooks:
        try:
            publish_webhooks(done.webhooks)
        except Exception:  # the reconciler sends what did not go out
            log.exception("queueing the webhook of job %s failed", done.job_id)
