"""The beat's lifecycle pass: what keeps stored data owned and bounded.

Run every DOCBATCH_LIFECYCLE_INTERVAL_SECONDS by the beat (docbatch.worker.lifecycle) and
on demand by ``docbatch gc``. One pass:

- **interrupted deletes**: a job still marked ``deleting`` that has ended (its delete's
  worker died half-way, or the message was lost) gets its delete sent again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from docbatch.domain import deletion
from docbatch.domain.outbox import outbox
from docbatch.schema.settings import Settings


@dataclass
class Report:
    """What one pass found and did."""

    deletes_resumed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"deletes_resumed": self.deletes_resumed}


def resume_deletes(session: Session, settings: Settings, report: Report) -> None:
    """Send the delete of every ended job still marked deleting (the outbox sends it)."""
    for job_id in deletion.deleting_jobs(session):
        outbox(session).add_delete(job_id)
        report.deletes_resumed.append(job_id)
