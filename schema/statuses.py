"""A job's statuses, in a module of their own: the CLI's client commands (``status --wait``)
import them in a client-only install, which has no SQLAlchemy (``docbatch[client]``)."""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    completed_with_errors = "completed_with_errors"
    failed = "failed"
    cancelling = "cancelling"
    cancelled = "cancelled"
    # Shown while a deleted job's rows go (never stored: jobs.deleting_at says it); the
    # job is a 404 once they have.
    deleting = "deleting"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_JOB_STATUSES


TERMINAL_JOB_STATUSES = frozenset(
    {JobStatus.completed, JobStatus.completed_with_errors, JobStatus.failed, JobStatus.cancelled}
)


__all__ = ["TERMINAL_JOB_STATUSES", "JobStatus"]
