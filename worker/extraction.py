"""The extract stage: a unit's files become text, in a sandbox child. No model.

A stage of the one unit runner (docbatch.worker.runner, which claims, heartbeats, times,
writes and closes): ``load`` reads the unit's stored files and finds earlier extractions
of the same bytes by the same extractor versions (copied instead of run again, one
statement for the unit); ``compute`` is docbatch.worker.extract.unit.extract_files: each
file's bytes spooled from its blob and run through the process's ``Sandbox`` (a child
process with a time limit per file: a parser that hangs or crashes costs that file, never
the worker), following attachments and archive members within one budget per upload, and
stopping between files and between an archive's members once the job is cancelled;
``write`` hands the outcomes to ``docbatch.domain.extraction.record``; ``finished``
removes the spooled texts and members. The model units that waited on these files are
settled when the runner closes the unit, and published after it commits.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from docbatch.domain.extraction import Extraction, Reused, earlier, files_of, record
from docbatch.domain.ledger import Claim, ClaimedDocument
from docbatch.domain.retry import RetryPolicy, describe, extract_time_limit, is_transient
from docbatch.domain.reuse import ResultIdentity
from docbatch.schema.settings import Settings
from docbatch.schema.tables import EXTRACT, DocumentFile, Job, ResultStatus, Unit
from docbatch.worker import metrics
from docbatch.worker.extract.expand import extractor_for
from docbatch.worker.extract.unit import UnitExtractions, extract_files
from docbatch.worker.stage import Computed, ShouldStop, Verdict

log = logging.getLogger("docbatch.worker")


@dataclass
class ExtractWork:
    """A claimed extract unit: its documents' stored files and earlier extractions."""

    documents: list[ClaimedDocument]  # custom_id: the file's name
    files: dict[int, DocumentFile]
    reused: dict[int, Reused]


@dataclass
class Extractions(Computed):
    """The unit's outcomes (document id -> Extraction; none once the job is being
    cancelled), their texts and members still spooled on disk."""

    found: UnitExtractions | None = None
    outcomes: dict[int, Extraction] = field(default_factory=dict)
    seconds: float = 0.0


class ExtractStage:
    """Files to text, as a stage of the runner (docbatch.worker.stage)."""

    task: str = EXTRACT
    reuse: ResultIdentity | None = None  # extractions are reused by the bytes' hash, in load
    # Claiming ahead would hold a unit an idle extract process could run: extracting is
    # all compute, nothing to overlap.
    claim_ahead: bool = False
    threaded: bool = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.extractor = extractor_for(settings)
        self.policy = RetryPolicy.of(settings)

    def load(self, session: Session, claim: Claim) -> ExtractWork:
        files = files_of(session, [d.id for d in claim.documents])
        reused = earlier(session, claim.job.tenant, claim.job.id, files, self.extractor)
        return ExtractWork(claim.documents, files, reused)

    def prepare(self, work: ExtractWork) -> None:
        pass

    def time_limit(self, work: ExtractWork) -> tuple[float, str] | None:
        files = len(work.documents) - len(work.reused)
        return extract_time_limit(self.policy, files, self.settings.extract_time_limit_seconds)

    def compute(self, work: ExtractWork, should_stop: ShouldStop) -> Extractions:
        documents = [(d.id, d.custom_id) for d in work.documents]
        start = time.perf_counter()
        found = extract_files(documents, work.files, work.reused, self.settings, should_stop)
        return Extractions(
            cancelled=found.cancelled,
            found=found,
            outcomes=found.outcomes,
            seconds=time.perf_counter() - start,
            files=len(found.outcomes),
            pages=sum(_described(ex)[2] for ex in found.outcomes.values()),
        )

    def write(
        self, session: Session, unit: Unit, job: Job, computed: Extractions, *, isolate: bool
    ) -> None:
        if computed.cancelled:  # the unit closes cancelled; nothing half-extracted is kept
            return
        if not isolate:
            record(session, self.settings, unit, job, computed.outcomes, self.extractor)
            return
        for doc_id, ex in computed.outcomes.items():
            try:
                with session.begin_nested():
                    record(session, self.settings, unit, job, {doc_id: ex}, self.extractor)
            except Exception as exc:
                if is_transient(exc):
                    raise
                reason = f"the extraction could not be stored: {describe(exc)}"
                log.warning("unit %s: %s: %s", unit.id, ex.name, reason)
                failed = Extraction(ex.name, ResultStatus.failed, error=reason)
                with session.begin_nested():
                    record(session, self.settings, unit, job, {doc_id: failed}, self.extractor)

    def finished(self, computed: Extractions, verdict: Verdict | None) -> None:
        if computed.found is not None:
            computed.found.close()  # the spooled texts and members
        if verdict == Verdict.done:
            metrics.extracted(
                [_described(ex) for ex in computed.outcomes.values()], computed.seconds
            )


def _described(ex: Extraction) -> tuple[str, str, int, str | None]:
    """(kind, status, pages, error) of one file, for the metrics."""
    kind = str(ex.output.get("kind") or "unknown")
    pages = ex.output.get("pages")
    return kind, ex.status.value, len(pages) if isinstance(pages, list) else 0, ex.error
