"""The beat's lifecycle pass on the maintenance queue (docbatch.domain.lifecycle has the
rules); ``docbatch gc`` runs the same pass in its own process."""

from __future__ import annotations

import logging

from docbatch.domain import lifecycle
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.settings import Settings

log = logging.getLogger("docbatch.lifecycle")


def lifecycle_pass(settings: Settings) -> lifecycle.Report:
    report = lifecycle.Report()
    with unit_of_work(settings) as s:
        lifecycle.resume_deletes(s, settings, report)
    if report.deletes_resumed:
        log.info("lifecycle: %s", report.as_dict())
    return report
