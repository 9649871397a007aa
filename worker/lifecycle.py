"""The lifecycle pass (docbatch.domain.lifecycle has the rules): the beat's
``docbatch.lifecycle`` on the maintenance queue, and ``docbatch gc``.

The beat's pass sends the deletes it resumes to the maintenance queue (they run in
parallel, each under its job's advisory lock); ``docbatch gc`` runs them itself and
reports the rows they removed.
"""

from __future__ import annotations

import logging

from docbatch.domain import lifecycle
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.settings import Settings
from docbatch.worker.deletion import delete_job

log = logging.getLogger("docbatch.lifecycle")


def lifecycle_pass(settings: Settings, *, inline: bool = False) -> lifecycle.Report:
    """One pass; with ``inline`` the resumed deletes run here, not on the queue."""
    report = lifecycle.Report()
    with unit_of_work(settings) as s:
        resumed = lifecycle.resume_deletes(s, report)
        resumed += lifecycle.expire_jobs(s, settings, report)
        if not inline:
            lifecycle.send_deletes(s, resumed)
    for job_id in resumed if inline else []:
        report.rows_deleted += delete_job(job_id, settings)
    with unit_of_work(settings) as s:
        lifecycle.expire_files(s, report)
    with unit_of_work(settings) as s:
        lifecycle.fix_originals(s, report)
    with unit_of_work(settings) as s:
        lifecycle.remove_orphaned_blobs(s, report)
    if report.anything:
        log.info("lifecycle: %s", report.as_dict())
    return report
